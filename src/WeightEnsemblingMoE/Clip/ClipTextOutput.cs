using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>The outputs of a CLIP text tower (HF <c>CLIPTextModelOutput</c>). Disposing it disposes the tensors.</summary>
/// <param name="LastHiddenState"><c>final_layer_norm</c> of the encoder output, shape [B, N, D].</param>
/// <param name="PooledOutput"><paramref name="LastHiddenState"/> at each text's end-of-text token, shape [B, D].</param>
/// <param name="TextEmbeds"><c>text_projection</c> of <paramref name="PooledOutput"/>, shape [B, projection_dim]; null without a projection.</param>
public sealed record ClipTextOutput(Tensor LastHiddenState, Tensor PooledOutput, Tensor? TextEmbeds) : IDisposable
{
    /// <summary>Disposes the output tensors.</summary>
    public void Dispose()
    {
        LastHiddenState.Dispose();
        PooledOutput.Dispose();
        TextEmbeds?.Dispose();
    }
}
