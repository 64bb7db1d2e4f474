using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>The outputs of a CLIP vision tower (HF <c>CLIPVisionModelOutput</c>). Disposing it disposes the tensors.</summary>
/// <param name="LastHiddenState">The encoder output, shape [B, N, D] (before <c>post_layernorm</c>).</param>
/// <param name="PooledOutput"><c>post_layernorm</c> of the class token, shape [B, D].</param>
/// <param name="ImageEmbeds"><c>visual_projection</c> of <paramref name="PooledOutput"/>, shape [B, projection_dim]; null without a projection.</param>
public sealed record ClipVisionOutput(Tensor LastHiddenState, Tensor PooledOutput, Tensor? ImageEmbeds) : IDisposable
{
    /// <summary>Disposes the output tensors.</summary>
    public void Dispose()
    {
        LastHiddenState.Dispose();
        PooledOutput.Dispose();
        ImageEmbeds?.Dispose();
    }
}
