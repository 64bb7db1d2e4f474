using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>Task vectors stored as one stacked dense tensor of shape [T, ...] (a frozen buffer named <c>task_vectors</c>).</summary>
public sealed class DenseTaskVectorStorage : TaskVectorStorage
{
    private readonly Tensor task_vectors;

    /// <summary>Creates a dense storage holding a copy of <paramref name="taskVectors"/>.</summary>
    /// <param name="taskVectors">The stacked task vectors, shape [T, ...]; copied, never disposed or aliased.</param>
    /// <param name="name">The module name. The default value is "dense".</param>
    public DenseTaskVectorStorage(Tensor taskVectors, string name = "dense")
        : this(Copy(taskVectors), name, owned: true)
    {
    }

    /// <summary>Takes ownership of <paramref name="stacked"/> (already detached and outside any dispose scope).</summary>
    internal DenseTaskVectorStorage(Tensor stacked, string name, bool owned)
        : base(name, checked((int)stacked.shape[0]), stacked.shape.Skip(1).ToArray())
    {
        _ = owned;
        task_vectors = stacked;
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override TaskVectorStorageKind Kind => TaskVectorStorageKind.Dense;

    /// <inheritdoc/>
    public override long ElementCount => task_vectors.numel();

    /// <inheritdoc/>
    public override long Bytes => task_vectors.numel() * task_vectors.ElementSize;

    /// <summary>The stacked task vectors [T, ...] (the stored buffer itself; do not dispose or modify it).</summary>
    public Tensor TaskVectors => task_vectors;

    /// <inheritdoc/>
    public override Tensor WeightedSum(Tensor routing)
    {
        using var scope = NewDisposeScope();
        var r = StorageArguments.Routing(routing, this, StoredPrecision.ComputeLike(task_vectors, routing));
        var result = StoredPrecision.Matmul(r, task_vectors.view(TaskCount, -1)).view(Shape.ToArray());
        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor BatchedWeightedSum(Tensor routing)
    {
        using var scope = NewDisposeScope();
        var r = StorageArguments.BatchedRouting(routing, this, StoredPrecision.ComputeLike(task_vectors, routing));
        var result = StoredPrecision.Matmul(r, task_vectors.view(TaskCount, -1)).view([r.shape[0], .. Shape]);
        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Two formulas, chosen per call by <see cref="ChooseStrategy"/>: materialise the per-sample deltas
    /// Δ_b = Σ_t R_bt τ_t with one matmul ([B, T]·[T, out·in]) and apply them with one batched matmul (cost
    /// B·out·in·(2T + 2N) FLOPs, plus writing and reading B weight sets), or run every task on every token
    /// (x·[τ_1; …; τ_T]ᵀ as one [B·N, in]·[in, T·out] matmul, then a weighted sum over t: 2·B·N·T·out·in FLOPs, no
    /// weight set materialised), which wins only for very few tokens per sample.
    /// </remarks>
    public override Tensor BatchedLinearDelta(Tensor input, Tensor routing)
    {
        StorageArguments.LinearInput(input, routing, this);
        return BatchedLinearCore(input, routing, null, null, ChooseStrategy(input.shape[0], input.shape[1]));
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Folds W into the per-sample weights (one <c>addmm</c>: W + R·τ, broadcast over the batch) so that one batched
    /// matmul computes x_b·(W + Δ_b)ᵀ: half the matmul work of <c>linear(x, W, b) + BatchedLinearDelta(x, R)</c>.
    /// </remarks>
    public override Tensor BatchedLinear(Tensor input, Tensor routing, Tensor weight, Tensor? bias)
    {
        StorageArguments.BaseLinear(input, routing, weight, bias, this);
        return BatchedLinearCore(input, routing, weight, bias, ChooseStrategy(input.shape[0], input.shape[1]));
    }

    /// <summary>
    /// Materialises the B merged weight sets W + Σ_t R_bt τ_t (W omitted when <paramref name="weight"/> is null):
    /// shape [B, out, in], one <c>addmm</c>/<c>matmul</c> over the stacked task vectors.
    /// </summary>
    internal Tensor BatchedMergedWeights(Tensor routing, Tensor? weight)
    {
        using var scope = NewDisposeScope();
        var like = StoredPrecision.ComputeLike(task_vectors, weight ?? routing);
        var r = StorageArguments.BatchedRouting(routing, this, like);
        var flat = task_vectors.view(TaskCount, -1);
        var merged = StoredPrecision.Matmul(r, flat, weight is null ? null : StorageArguments.Align(weight, like).reshape(1, -1));
        return merged.view([r.shape[0], .. Shape]).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Which formula <see cref="BatchedLinear"/> uses for B samples of N tokens: the one with the smaller estimated cost,
    /// FLOPs plus 4 FLOP-equivalents per byte moved (a CPU does a few FLOPs in the time it moves one byte from memory).
    /// Materialise: B·out·in·(2T + 2N + 4·8) (the matmuls, and 8 bytes per merged element written and read back);
    /// all tasks: B·out·in·(2NT + 2N). For ViT-B/32 (N = 50, T = 8) materialising is about 6× cheaper; for N ≤ 2 running
    /// all tasks is.
    /// </summary>
    internal DenseLinearStrategy ChooseStrategy(long batch, long tokens)
    {
        _ = batch; // Both costs scale with B.
        double materialise = (2.0 * TaskCount) + (2.0 * tokens) + 32.0;
        double allTasks = (2.0 * tokens * TaskCount) + (2.0 * tokens);
        return allTasks < materialise ? DenseLinearStrategy.AllTasks : DenseLinearStrategy.Materialise;
    }

    /// <summary>x_b·(W + Σ_t R_bt τ_t)ᵀ + b with an explicit formula (W and b optional); arguments already checked.</summary>
    internal Tensor BatchedLinearCore(Tensor input, Tensor routing, Tensor? weight, Tensor? bias, DenseLinearStrategy strategy)
    {
        using var scope = NewDisposeScope();
        var like = StoredPrecision.ComputeLike(task_vectors, weight ?? input);
        var r = StorageArguments.Align(routing, like);
        var x = StorageArguments.Align(input, like);
        long b = x.shape[0], n = x.shape[1], outFeatures = Shape[0], inFeatures = Shape[1];
        Tensor result;
        if (strategy == DenseLinearStrategy.Materialise && NoGradientNeeded(x, r, weight, bias, task_vectors))
        {
            // Inference: merge and multiply block by block in a reused buffer (no B full weight sets, no page faults).
            var flat = task_vectors.view(TaskCount, -1);
            result = BlockedLinear(
                x,
                weight is null ? null : StorageArguments.Align(weight, like),
                bias is null ? null : StorageArguments.Align(bias, like),
                (block, row, rows) => block.addmm_(r, StoredPrecision.Upcast(flat.narrow(1, row * inFeatures, rows * inFeatures), r.dtype), beta: 1, alpha: 1));
        }
        else if (strategy == DenseLinearStrategy.Materialise)
        {
            var merged = BatchedMergedWeights(r, weight);
            result = x.bmm(merged.transpose(1, 2));
            if (bias is not null)
            {
                result = result.add_(StorageArguments.Align(bias, like));
            }
        }
        else
        {
            // [B·N, in]·[in, T·out] → [B, N, T, out]; then Σ_t R_bt y_bnt as [B, 1, 1, T]·[B, N, T, out].
            var perTask = StoredPrecision.MatmulTransposed(x.reshape(b * n, inFeatures), task_vectors.view(TaskCount * outFeatures, inFeatures))
                .view(b, n, TaskCount, outFeatures);
            result = r.view(b, 1, 1, TaskCount).matmul(perTask).view(b, n, outFeatures);
            if (weight is not null)
            {
                result = result.add_(nn.functional.linear(x, StorageArguments.Align(weight, like), bias is null ? null : StorageArguments.Align(bias, like)));
            }
            else if (bias is not null)
            {
                result = result.add_(StorageArguments.Align(bias, like));
            }
        }

        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor ToDense(int task)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(task);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(task, TaskCount);
        using var stored = task_vectors[task];
        return StoredPrecision.IsHalf(stored.dtype) ? stored.to(ScalarType.Float32) : stored.clone();
    }

    private static Tensor Copy(Tensor taskVectors)
    {
        ArgumentNullException.ThrowIfNull(taskVectors);
        if (taskVectors.dim() < 1)
        {
            throw new ArgumentException(
                $"taskVectors must have shape [T, ...] ; got [{string.Join(", ", taskVectors.shape)}].",
                nameof(taskVectors));
        }

        return taskVectors.detach().clone().DetachFromDisposeScope();
    }
}
