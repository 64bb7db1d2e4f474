using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>The outputs of a full CLIP model (HF <c>CLIPOutput</c>, without the loss). Disposing it disposes the tensors.</summary>
/// <param name="LogitsPerImage">exp(<c>logit_scale</c>) times the cosine similarities, shape [images, texts].</param>
/// <param name="LogitsPerText">The transpose of <paramref name="LogitsPerImage"/>, shape [texts, images].</param>
/// <param name="TextEmbeds">The projected text features normalised to unit length, shape [texts, projection_dim].</param>
/// <param name="ImageEmbeds">The projected image features normalised to unit length, shape [images, projection_dim].</param>
public sealed record ClipOutput(Tensor LogitsPerImage, Tensor LogitsPerText, Tensor TextEmbeds, Tensor ImageEmbeds) : IDisposable
{
    /// <summary>Disposes the output tensors.</summary>
    public void Dispose()
    {
        LogitsPerImage.Dispose();
        LogitsPerText.Dispose();
        TextEmbeds.Dispose();
        ImageEmbeds.Dispose();
    }
}
