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
        // The managed kernel reads τ as stored, so it runs when τ is stored in the compute dtype (float32 or float64);
        // 16-bit storages take the libtorch path, which upcasts each block as it reads it.
        bool fused = FusedMergeKernel.Handles(task_vectors) && task_vectors.dtype == like.dtype;
        if (strategy == DenseLinearStrategy.Materialise && NoGradientNeeded(x, r, weight, bias, task_vectors))
        {
            // Inference: merge and multiply block by block in a reused buffer (no B full weight sets, no page faults).
            var w = weight is null ? null : StorageArguments.Align(weight, like);
            var c = bias is null ? null : StorageArguments.Align(bias, like);
            if (fused)
            {
                result = FusedBlockedLinear(x, r, w, c);
            }
            else
            {
                var flat = task_vectors.view(TaskCount, -1);
                result = BlockedLinear(
                    x,
                    w,
                    c,
                    (block, row, rows) => block.addmm_(r, StoredPrecision.Upcast(flat.narrow(1, row * inFeatures, rows * inFeatures), r.dtype), beta: 1, alpha: 1));
            }
        }
        else if (strategy == DenseLinearStrategy.Materialise && fused
            && !task_vectors.requires_grad && !(weight?.requires_grad ?? false) && !(bias?.requires_grad ?? false))
        {
            // Autograd through x and/or R only (routers training, frozen W, b, τ): the same blocked forward, and a blocked
            // backward (PerSampleLinearFunction) instead of B merged weight sets kept for backward.
            result = PerSampleLinearFunction.apply(
                x,
                r,
                weight is null ? null! : StorageArguments.Align(weight, like),
                bias is null ? null! : StorageArguments.Align(bias, like),
                this);
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

    /// <summary>
    /// x_b·(W + Σ_t R_bt τ_t)ᵀ + b without any merged weight set in memory: float32 on an AVX2 + FMA CPU through
    /// <see cref="PerSampleGemm"/>; otherwise block of output rows by block with the managed fused merge
    /// (<see cref="FusedMergeKernel"/>), each block's B merged rows written in one pass over τ's rows into the reused
    /// buffer, then one <c>bmm</c>. Operands already aligned to the storage's dtype and device; no autograd graph is built.
    /// </summary>
    internal Tensor FusedBlockedLinear(Tensor x, Tensor r, Tensor? weight, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        long inFeatures = Shape[1];
        if (PerSampleGemmKernel.IsSupported && task_vectors.dtype == ScalarType.Float32)
        {
            return PerSampleGemm(x, r, weight, bias).MoveToOuterDisposeScope();
        }

        var merge = FusedMergeKernel.Prepare(task_vectors.view(TaskCount, -1), r, weight?.reshape(-1));
        var result = BlockedLinear(x, weight, bias, (block, row, rows) => merge.Write(block, row * inFeatures, rows * inFeatures), writesWeight: true);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// x_b·(W + Σ_t R_bt τ_t)ᵀ + b for float32 on an AVX2 + FMA CPU through <see cref="PerSampleGemmKernel"/>: one GEMM
    /// whose weight-panel packing does the merge, so no merged weight block is written to memory and read back. Operands
    /// already aligned to the storage's dtype and device.
    /// </summary>
    internal unsafe Tensor PerSampleGemm(Tensor x, Tensor r, Tensor? weight, Tensor? bias)
    {
        long outFeatures = Shape[0], inFeatures = Shape[1];
        var source = new PerSampleGemmKernel.DensePanels((float*)FusedMergeKernel.Address(task_vectors), checked((int)outFeatures), checked((int)inFeatures));
        var result = PerSampleGemmKernel.Linear(source, TaskCount, x, r, weight, bias, outFeatures);
        GC.KeepAlive(task_vectors);
        return result;
    }

    /// <summary>
    /// The gradients of <see cref="FusedBlockedLinear"/> for the output gradient gy [B, N, out], block of output rows by
    /// block: grad x_b = Σ_blocks gy_b[:, rows]·M_b[rows] with M_b's rows re-merged by the fused kernel, and
    /// grad R_bt = Σ_blocks ⟨τ_t[rows], gy_b[:, rows]ᵀ·x_b⟩. Nothing of size B·out·in is allocated.
    /// </summary>
    internal (Tensor? Input, Tensor? Routing) FusedBlockedLinearBackward(Tensor gradOutput, Tensor x, Tensor r, Tensor? weight, bool needInput, bool needRouting)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], outFeatures = Shape[0], inFeatures = Shape[1];
        var flat = task_vectors.view(TaskCount, -1);
        var gradInput = needInput ? zeros(x.shape, x.dtype, x.device) : null;
        var sums = needRouting ? new double[b * TaskCount] : null;
        var merge = FusedMergeKernel.Prepare(flat, r, weight?.reshape(-1));
        var gradOutputs = gradOutput.contiguous(); // an expanded gradient (of a sum) would take bmm's slow strided path
        long rowsPerBlock = RowsPerBlock(b);
        var buffer = needInput ? Workspace(b * rowsPerBlock * inFeatures, x) : null;
        for (long row = 0; row < outFeatures && (needInput || needRouting); row += rowsPerBlock)
        {
            using var inner = NewDisposeScope();
            long rows = Math.Min(rowsPerBlock, outFeatures - row);
            var gy = gradOutputs.narrow(2, row, rows);
            if (gradInput is not null)
            {
                var block = buffer!.narrow(0, 0, b * rows * inFeatures).view(b, rows * inFeatures);
                merge.Write(block, row * inFeatures, rows * inFeatures);
                gradInput.add_(gy.bmm(block.view(b, rows, inFeatures)));
            }

            if (sums is not null)
            {
                // G_b = gy_b[:, rows]ᵀ·x_b, then ⟨G_b, τ_t[rows]⟩ by the managed dot kernel (libtorch's [B, K]·[K, T] GEMM
                // with K = rows·in is the same K-heavy shape that runs the merge slowly).
                var g = gy.transpose(1, 2).bmm(x).view(b, rows * inFeatures);
                merge.AddDots(sums, g, row * inFeatures, rows * inFeatures);
            }
        }

        var gradRouting = sums is null ? null : tensor(sums, ScalarType.Float64).view(b, TaskCount).to(r.dtype);
        return (gradInput?.MoveToOuterDisposeScope(), gradRouting?.MoveToOuterDisposeScope());
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
