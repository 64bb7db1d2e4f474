using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// The task vectors τ_t = θ_t − θ_0 of one parameter tensor, for tasks t = 1..T, held in one storage
/// (dense, sparse or low-rank). A storage is a TorchSharp module whose frozen buffers hold the data, so
/// <c>to(device)</c> moves it and its owner's state dict shows it.
/// </summary>
public abstract class TaskVectorStorage : nn.Module
{
    /// <summary>Initialises the common state of a storage.</summary>
    /// <param name="name">The module name.</param>
    /// <param name="taskCount">The number of tasks T.</param>
    /// <param name="shape">The shape of the parameter tensor (without the task dimension).</param>
    protected TaskVectorStorage(string name, int taskCount, long[] shape) : base(name)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(taskCount);
        ArgumentNullException.ThrowIfNull(shape);
        TaskCount = taskCount;
        Shape = (long[])shape.Clone();
    }

    /// <summary>The number of tasks T.</summary>
    public int TaskCount { get; }

    /// <summary>The shape of the parameter tensor, without the task dimension.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>Which storage this is.</summary>
    public abstract TaskVectorStorageKind Kind { get; }

    /// <summary>The number of stored elements (values, indices and factors all counted).</summary>
    public abstract long ElementCount { get; }

    /// <summary>The number of bytes the stored tensors occupy.</summary>
    public abstract long Bytes { get; }

    /// <summary>Σ_t r_t τ_t for one routing vector <paramref name="routing"/> of shape [T]; the result has <see cref="Shape"/>.</summary>
    public abstract Tensor WeightedSum(Tensor routing);

    /// <summary>Per-sample weighted sums for routing weights R of shape [B, T]: a tensor of shape [B, ...<see cref="Shape"/>].</summary>
    public abstract Tensor BatchedWeightedSum(Tensor routing);

    /// <summary>
    /// For a linear weight (<see cref="Shape"/> = [out, in]): given inputs x of shape [B, N, in] and routing weights R of
    /// shape [B, T], returns x_b · (Σ_t R_{b,t} τ_t)ᵀ for every sample b, shape [B, N, out]. Storages compute this without
    /// densifying what they store where a cheaper formula exists.
    /// </summary>
    public abstract Tensor BatchedLinearDelta(Tensor input, Tensor routing);

    /// <summary>
    /// For a linear layer with base weight W [out, in] and base bias b [out]: given inputs x of shape [B, N, in] and routing
    /// weights R of shape [B, T], returns x_b · (W + Σ_t R_{b,t} τ_t)ᵀ + b for every sample b, shape [B, N, out]. Equals
    /// <c>linear(x, W, b) + BatchedLinearDelta(x, R)</c>; storages override it where folding W into the per-sample
    /// weights saves work (dense and sparse storages then run one batched matmul instead of two).
    /// </summary>
    /// <param name="input">The inputs x, shape [B, N, in]; not disposed.</param>
    /// <param name="routing">The routing weights R, shape [B, T]; gradients flow through them.</param>
    /// <param name="weight">The base weight W, shape <see cref="Shape"/> = [out, in]; not disposed.</param>
    /// <param name="bias">The base bias b, shape [out], or <see langword="null"/> for none.</param>
    /// <returns>The outputs, shape [B, N, out].</returns>
    /// <exception cref="ArgumentException">A shape does not match (the message names the argument).</exception>
    public virtual Tensor BatchedLinear(Tensor input, Tensor routing, Tensor weight, Tensor? bias)
    {
        StorageArguments.BaseLinear(input, routing, weight, bias, this);
        using var scope = NewDisposeScope();
        var result = nn.functional.linear(input, weight, bias).add_(BatchedLinearDelta(input, routing));
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The task vector of one task, dense, with <see cref="Shape"/> (as stored: pruned or truncated).</summary>
    public abstract Tensor ToDense(int task);
}
