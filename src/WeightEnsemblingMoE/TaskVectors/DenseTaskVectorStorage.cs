using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>Task vectors stored as one stacked dense tensor of shape [T, ...] (a frozen buffer named <c>task_vectors</c>).</summary>
public sealed class DenseTaskVectorStorage : TaskVectorStorage
{
#pragma warning disable IDE1006 // Buffer names mirror PyTorch state-dict keys.
    private readonly Tensor task_vectors;
#pragma warning restore IDE1006

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
        var r = StorageArguments.Routing(routing, this, task_vectors);
        var result = r.matmul(task_vectors.view(TaskCount, -1)).view(Shape.ToArray());
        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor BatchedWeightedSum(Tensor routing)
    {
        using var scope = NewDisposeScope();
        var r = StorageArguments.BatchedRouting(routing, this, task_vectors);
        var result = r.matmul(task_vectors.view(TaskCount, -1)).view([r.shape[0], .. Shape]);
        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Materialises the per-sample deltas W_b = Σ_t R_bt τ_t with one matmul ([B, T]·[T, out·in]) and applies them with one
    /// batched matmul: cost B·out·in·(T + N) against B·N·T·out·in for running every task on every token.
    /// </remarks>
    public override Tensor BatchedLinearDelta(Tensor input, Tensor routing)
    {
        StorageArguments.LinearInput(input, routing, this);
        using var scope = NewDisposeScope();
        var r = StorageArguments.Align(routing, task_vectors);
        var deltas = r.matmul(task_vectors.view(TaskCount, -1)).view(r.shape[0], Shape[0], Shape[1]);
        var x = StorageArguments.Align(input, task_vectors);
        var result = x.bmm(deltas.transpose(1, 2));
        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor ToDense(int task)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(task);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(task, TaskCount);
        return task_vectors[task].clone();
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
