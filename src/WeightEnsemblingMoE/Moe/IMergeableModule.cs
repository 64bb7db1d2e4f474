using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Moe;

/// <summary>
/// A module whose forward pass is a fixed composition of named linear layers (a CLIP MLP: <c>fc1</c>, activation,
/// <c>fc2</c>; a CLIP attention block: <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>, <c>out_proj</c>). Mixture-of-experts
/// wrappers run it with merged weights by supplying their own implementation of each linear layer.
/// </summary>
public interface IMergeableModule
{
    /// <summary>The names of the linear layers the forward pass uses, in the module's state-dict naming (e.g. <c>fc1</c>).</summary>
    IReadOnlyList<string> LinearLayerNames { get; }

    /// <summary>Runs the forward pass, computing every linear layer through <paramref name="linear"/>.</summary>
    /// <param name="input">The module input, shape [B, N, D].</param>
    /// <param name="linear">Computes the linear layer with the given name on the given input.</param>
    Tensor Forward(Tensor input, LinearLayerFunction linear);
}
