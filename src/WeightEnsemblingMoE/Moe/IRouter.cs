namespace WeightEnsembling.Moe;

/// <summary>
/// A WEMoE router (gate): a module that maps tokens of shape [B, N, <see cref="InputDimension"/>] to per-token routing
/// outputs of shape [B, N, <see cref="TaskCount"/>]. <see cref="WeightEnsemblingMoE"/> averages them over the tokens
/// into routing weights r ∈ R^T (no softmax). Any <c>torch.nn.Module&lt;Tensor, Tensor&gt;</c> with that contract is
/// accepted as a router; implementing this interface lets the MoE module check its widths up front.
/// </summary>
public interface IRouter
{
    /// <summary>The number of tasks T, the width of the routing output.</summary>
    int TaskCount { get; }

    /// <summary>The width of the router input (the hidden size D, or D + 8 for a shared router with position encoding).</summary>
    int InputDimension { get; }
}
