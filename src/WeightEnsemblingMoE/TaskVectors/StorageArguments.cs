using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>Argument checks shared by the storages' public methods.</summary>
internal static class StorageArguments
{
    /// <summary>Checks a routing vector of shape [T] and returns it in <paramref name="like"/>'s dtype and device.</summary>
    public static Tensor Routing(Tensor routing, TaskVectorStorage storage, Tensor like)
    {
        ArgumentNullException.ThrowIfNull(routing);
        if (routing.dim() != 1 || routing.shape[0] != storage.TaskCount)
        {
            throw new ArgumentException(
                $"routing must have shape [{storage.TaskCount}] (one weight per task); got [{string.Join(", ", routing.shape)}].", nameof(routing));
        }

        return Align(routing, like);
    }

    /// <summary>Checks routing weights of shape [B, T] and returns them in <paramref name="like"/>'s dtype and device.</summary>
    public static Tensor BatchedRouting(Tensor routing, TaskVectorStorage storage, Tensor like)
    {
        ArgumentNullException.ThrowIfNull(routing);
        if (routing.dim() != 2 || routing.shape[1] != storage.TaskCount)
        {
            throw new ArgumentException(
                $"routing must have shape [B, {storage.TaskCount}]; got [{string.Join(", ", routing.shape)}].", nameof(routing));
        }

        return Align(routing, like);
    }

    /// <summary>Checks the input [B, N, in] and routing [B, T] of a batched linear delta for a [out, in] weight.</summary>
    public static Tensor LinearInput(Tensor input, Tensor routing, TaskVectorStorage storage)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(routing);
        if (storage.Shape.Count != 2)
        {
            throw new InvalidOperationException(
                $"BatchedLinearDelta needs a 2-D linear weight; storage '{storage.GetName()}' holds shape [{string.Join(", ", storage.Shape)}].");
        }

        if (input.dim() != 3 || input.shape[2] != storage.Shape[1])
        {
            throw new ArgumentException(
                $"input must have shape [B, N, {storage.Shape[1]}]; got [{string.Join(", ", input.shape)}].", nameof(input));
        }

        if (routing.dim() != 2 || routing.shape[1] != storage.TaskCount || routing.shape[0] != input.shape[0])
        {
            throw new ArgumentException(
                $"routing must have shape [{input.shape[0]}, {storage.TaskCount}] (batch of input, task count); got [{string.Join(", ", routing.shape)}].",
                nameof(routing));
        }

        return routing;
    }

    /// <summary>Checks the arguments of a batched linear layer: <see cref="LinearInput"/>, plus the base weight [out, in] and bias [out].</summary>
    public static void BaseLinear(Tensor input, Tensor routing, Tensor weight, Tensor? bias, TaskVectorStorage storage)
    {
        LinearInput(input, routing, storage);
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.dim() != 2 || weight.shape[0] != storage.Shape[0] || weight.shape[1] != storage.Shape[1])
        {
            throw new ArgumentException(
                $"weight must have shape [{storage.Shape[0]}, {storage.Shape[1]}] (the storage's shape); got [{string.Join(", ", weight.shape)}].",
                nameof(weight));
        }

        if (bias is not null && (bias.dim() != 1 || bias.shape[0] != storage.Shape[0]))
        {
            throw new ArgumentException(
                $"bias must have shape [{storage.Shape[0]}]; got [{string.Join(", ", bias.shape)}].", nameof(bias));
        }
    }

    /// <summary>Returns <paramref name="tensor"/> in the dtype and device of <paramref name="like"/> (gradients flow through).</summary>
    public static Tensor Align(Tensor tensor, Tensor like) =>
        tensor.dtype == like.dtype && tensor.device == like.device ? tensor : tensor.to(like.dtype, like.device);
}
