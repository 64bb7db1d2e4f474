using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// Magnitude-pruned task vectors (E-WEMoE) stored compactly: for each task, the kept values and their flat element
/// indices (int32 when the tensor has at most 2³¹ − 1 elements, else int64), concatenated over tasks into the frozen
/// buffers <c>values</c> and <c>indices</c>. Bytes fall to about (1 − p) of dense times (1 + index size / value size).
/// </summary>
/// <remarks>
/// Pruning rule, per task and per tensor: for p &gt; 0 keep the elements with |τ| strictly greater than the p-quantile of
/// |τ| (torch.quantile's 'linear' method, computed with kthvalue), as FusionBench's sparse WEMoE does
/// (<c>mask = |τ| &gt; quantile(|τ|, p)</c>); for p = 0 keep every element, so the storage equals dense exactly
/// (FusionBench's strict rule would drop the smallest-magnitude elements even at p = 0).
/// All products are computed from the compact form with <c>index_add</c>; the dense [T, ...] stack is never rebuilt.
/// </remarks>
public sealed class SparseTaskVectorStorage : TaskVectorStorage
{
#pragma warning disable IDE1006 // Buffer names mirror PyTorch state-dict keys.
    private readonly Tensor values;
    private readonly Tensor indices;
#pragma warning restore IDE1006
    private readonly long[] offsets;
    private readonly long elementsPerTask;

    /// <summary>Prunes and stores <paramref name="taskVectors"/> (one tensor per task, all of one shape; not modified).</summary>
    /// <param name="taskVectors">The task vectors τ_t, one per task.</param>
    /// <param name="sparsityRatio">The pruned fraction p, in [0, 1).</param>
    /// <param name="name">The module name. The default value is "sparse".</param>
    public SparseTaskVectorStorage(IReadOnlyList<Tensor> taskVectors, double sparsityRatio, string name = "sparse")
        : this(Prune(taskVectors, sparsityRatio), name)
    {
    }

    /// <summary>Concatenates per-task (values, indices) parts; copies them, so the caller still owns the parts.</summary>
    internal SparseTaskVectorStorage(IReadOnlyList<Tensor> values, IReadOnlyList<Tensor> indices, long[] shape, string name)
        : base(name, values.Count, shape)
    {
        if (values.Count != indices.Count)
        {
            throw new ArgumentException("Each task needs both values and indices.", nameof(indices));
        }

        offsets = new long[values.Count + 1];
        for (int t = 0; t < values.Count; t++)
        {
            if (values[t].numel() != indices[t].numel())
            {
                throw new ArgumentException($"Task {t}: {values[t].numel()} values but {indices[t].numel()} indices.", nameof(indices));
            }

            offsets[t + 1] = offsets[t] + values[t].numel();
        }

        elementsPerTask = shape.Aggregate(1L, (a, b) => a * b);
        using (var scope = NewDisposeScope())
        {
            this.values = cat(values.Select(v => v.reshape(-1)).ToArray(), 0).detach().DetachFromDisposeScope();
            this.indices = cat(indices.Select(i => i.reshape(-1)).ToArray(), 0).DetachFromDisposeScope();
        }

        RegisterComponents();
    }

    private SparseTaskVectorStorage((List<Tensor> Values, List<Tensor> Indices, long[] Shape) parts, string name)
        : this(parts.Values, parts.Indices, parts.Shape, name)
    {
        foreach (var tensor in parts.Values.Concat(parts.Indices))
        {
            tensor.Dispose();
        }
    }

    /// <inheritdoc/>
    public override TaskVectorStorageKind Kind => TaskVectorStorageKind.Sparse;

    /// <inheritdoc/>
    public override long ElementCount => values.numel() + indices.numel();

    /// <inheritdoc/>
    public override long Bytes => (values.numel() * values.ElementSize) + (indices.numel() * indices.ElementSize);

    /// <summary>The number of kept (non-pruned) elements of task <paramref name="task"/>.</summary>
    /// <param name="task">The task index, in [0, T).</param>
    public long KeptCount(int task)
    {
        CheckTask(task);
        return offsets[task + 1] - offsets[task];
    }

    /// <inheritdoc/>
    public override Tensor WeightedSum(Tensor routing)
    {
        using var scope = NewDisposeScope();
        var r = StorageArguments.Routing(routing, this, values);
        var result = zeros(elementsPerTask, values.dtype, values.device);
        for (int t = 0; t < TaskCount; t++)
        {
            var (v, i) = Part(t);
            result = result.index_add(0, i, v * r[t], 1);
        }

        return result.view(Shape.ToArray()).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor BatchedWeightedSum(Tensor routing)
    {
        using var scope = NewDisposeScope();
        var r = StorageArguments.BatchedRouting(routing, this, values);
        return Scatter(r).view([r.shape[0], .. Shape]).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Scatters the kept values, weighted per sample, into the per-sample deltas [B, out·in] (one in-place index_add per
    /// task, no per-sample loop) and applies them with one batched matmul.
    /// </remarks>
    public override Tensor BatchedLinearDelta(Tensor input, Tensor routing)
    {
        StorageArguments.LinearInput(input, routing, this);
        using var scope = NewDisposeScope();
        var r = StorageArguments.Align(routing, values);
        var deltas = Scatter(r).view(r.shape[0], Shape[0], Shape[1]);
        var result = StorageArguments.Align(input, values).bmm(deltas.transpose(1, 2));
        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Scatters the weighted kept values into B copies of W (so W + Δ_b is built in one buffer) and runs one batched
    /// matmul: half the matmul work of <c>linear(x, W, b) + BatchedLinearDelta(x, R)</c>. A <c>torch.sparse</c> CSR
    /// matmul that never builds the B weight sets was measured about 10× slower on CPU (see docs/benchmarks.md).
    /// </remarks>
    public override Tensor BatchedLinear(Tensor input, Tensor routing, Tensor weight, Tensor? bias)
    {
        StorageArguments.BaseLinear(input, routing, weight, bias, this);
        using var scope = NewDisposeScope();
        var r = StorageArguments.Align(routing, values);
        var initial = StorageArguments.Align(weight, values).reshape(1, elementsPerTask).repeat(r.shape[0], 1);
        var merged = Scatter(r, initial).view(r.shape[0], Shape[0], Shape[1]);
        var result = StorageArguments.Align(input, values).bmm(merged.transpose(1, 2));
        if (bias is not null)
        {
            result = result.add_(StorageArguments.Align(bias, values));
        }

        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor ToDense(int task)
    {
        CheckTask(task);
        using var scope = NewDisposeScope();
        var (v, i) = Part(task);
        var result = zeros(elementsPerTask, values.dtype, values.device).index_add(0, i, v, 1);
        return result.view(Shape.ToArray()).MoveToOuterDisposeScope();
    }

    /// <summary>Prunes one task vector: the kept values and their flat indices (see the class remarks for the rule).</summary>
    internal static (Tensor Values, Tensor Indices) Compress(Tensor taskVector, double sparsityRatio)
    {
        using var scope = NewDisposeScope();
        var flat = taskVector.detach().reshape(-1);
        long n = flat.numel();
        var indexType = n <= int.MaxValue ? ScalarType.Int32 : ScalarType.Int64;
        Tensor indices;
        Tensor values;
        if (sparsityRatio == 0 || n == 0)
        {
            indices = arange(n, indexType, flat.device);
            values = flat.clone();
        }
        else
        {
            var magnitude = flat.abs();
            var threshold = TensorQuantile.Quantile(magnitude, sparsityRatio);
            indices = magnitude.gt(threshold).nonzero().reshape(-1);
            values = flat.index_select(0, indices);
            indices = indices.to(indexType);
        }

        return (values.MoveToOuterDisposeScope(), indices.MoveToOuterDisposeScope());
    }

    private static (List<Tensor>, List<Tensor>, long[]) Prune(IReadOnlyList<Tensor> taskVectors, double sparsityRatio)
    {
        ArgumentNullException.ThrowIfNull(taskVectors);
        if (!(sparsityRatio >= 0 && sparsityRatio < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(sparsityRatio), sparsityRatio, "The sparsity ratio must lie in [0, 1).");
        }

        if (taskVectors.Count == 0)
        {
            throw new ArgumentException("At least one task vector is needed.", nameof(taskVectors));
        }

        var shape = taskVectors[0]?.shape ?? throw new ArgumentException("Task vector 0 is null.", nameof(taskVectors));
        var values = new List<Tensor>();
        var indices = new List<Tensor>();
        for (int t = 0; t < taskVectors.Count; t++)
        {
            var tau = taskVectors[t] ?? throw new ArgumentException($"Task vector {t} is null.", nameof(taskVectors));
            if (!tau.shape.SequenceEqual(shape))
            {
                throw new ArgumentException(
                    $"Task vector {t} has shape [{string.Join(", ", tau.shape)}]; task vector 0 has [{string.Join(", ", shape)}].", nameof(taskVectors));
            }

            var (v, i) = Compress(tau, sparsityRatio);
            values.Add(v.DetachFromDisposeScope());
            indices.Add(i.DetachFromDisposeScope());
        }

        return (values, indices, shape);
    }

    /// <summary>Adds Σ_t R_bt τ_t into <paramref name="initial"/> [B, out·in] (a new zero tensor when null), in place.</summary>
    private Tensor Scatter(Tensor routing, Tensor? initial = null)
    {
        var result = initial ?? zeros(routing.shape[0], elementsPerTask, values.dtype, values.device);
        for (int t = 0; t < TaskCount; t++)
        {
            var (v, i) = Part(t);
            result = result.index_add_(1, i, routing.narrow(1, t, 1) * v.unsqueeze(0), 1);
        }

        return result;
    }

    /// <summary>The values and int64 indices of one task (TorchSharp's index_add accepts int64 indices only).</summary>
    private (Tensor Values, Tensor Indices) Part(int task) =>
        (values.narrow(0, offsets[task], offsets[task + 1] - offsets[task]),
         indices.narrow(0, offsets[task], offsets[task + 1] - offsets[task]).to(ScalarType.Int64));

    private void CheckTask(int task)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(task);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(task, TaskCount);
    }
}
