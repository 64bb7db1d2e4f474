using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// y_b = x_b·(W + Σ_t R_bt τ_t)ᵀ + b as a custom autograd function over a dense storage whose τ, W and b are frozen:
/// the forward is <see cref="DenseTaskVectorStorage.FusedBlockedLinear"/> (block by block, nothing of size B·out·in),
/// the backward <see cref="DenseTaskVectorStorage.FusedBlockedLinearBackward"/> (grad x and grad R, W's blocks re-merged).
/// Only x, R and W are saved for backward (W and τ already exist), where the materialised formula keeps the B merged weight
/// sets alive until backward.
/// Arguments of <c>apply</c>: x [B, N, in], R [B, T], W [out, in] or null, b [out] or null, the storage.
/// </summary>
internal sealed class PerSampleLinearFunction : autograd.SingleTensorFunction<PerSampleLinearFunction>
{
    /// <inheritdoc/>
    public override string Name => nameof(PerSampleLinearFunction);

    /// <inheritdoc/>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ArgumentNullException.ThrowIfNull(vars);
        var x = (Tensor)vars[0];
        var r = (Tensor)vars[1];
        var weight = vars[2] as Tensor;
        var bias = vars[3] as Tensor;
        var storage = (DenseTaskVectorStorage)vars[4];
        ctx.save_for_backward([x, r, weight!]);
        ctx.save_data("storage", storage);
        ctx.save_data("input", x.requires_grad);
        ctx.save_data("routing", r.requires_grad);
        return storage.FusedBlockedLinear(x, r, weight, bias);
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var (x, r, weight) = (saved[0], saved[1], saved.Count > 2 ? saved[2] : null);
        var storage = (DenseTaskVectorStorage)ctx.get_data("storage");
        bool needInput = (bool)ctx.get_data("input"), needRouting = (bool)ctx.get_data("routing");
        Tensor? gradInput, gradRouting;
        if (is_grad_enabled())
        {
            // create_graph: the gradients must themselves be differentiable, so use the materialised formula built from
            // differentiable ops (the blocked one overwrites a buffer).
            var flat = storage.TaskVectors.view(storage.TaskCount, -1);
            long b = x.shape[0], outFeatures = storage.Shape[0], inFeatures = storage.Shape[1];
            var delta = r.matmul(flat);
            var merged = (weight is null ? delta : delta + weight.reshape(1, -1)).view(b, outFeatures, inFeatures);
            gradInput = needInput ? grad_output.bmm(merged) : null;
            gradRouting = needRouting ? grad_output.transpose(1, 2).bmm(x).view(b, -1).matmul(flat.t()) : null;
        }
        else
        {
            (gradInput, gradRouting) = storage.FusedBlockedLinearBackward(grad_output, x, r, weight, needInput, needRouting);
        }

        // The native node copies the returned tensors when this method returns: keep the handles alive until the
        // caller's scope (or the finalizer, when there is none) releases them.
        return [gradInput?.MoveToOuterDisposeScope()!, gradRouting?.MoveToOuterDisposeScope()!, null!, null!, null!];
    }
}
