using WeightEnsembling.Clip;

namespace WeightEnsembling.Upscaling;

/// <summary>
/// Starts <see cref="ModelUpscaler"/>s preset with the application's options and logger; registered by
/// <c>AddWeightEnsemblingMoE</c>.
/// </summary>
public interface IModelUpscalerFactory
{
    /// <summary>Starts an upscaler for a pre-trained model in memory (not modified, not disposed).</summary>
    /// <param name="pretrained">The pre-trained model θ_0.</param>
    /// <returns>An upscaler with the configured options and logger; its <c>With…</c> methods still override them.</returns>
    ModelUpscaler For(ClipVisionModel pretrained);

    /// <summary>Starts an upscaler for a pre-trained model in a Hugging Face folder (config.json + safetensors).</summary>
    /// <param name="folder">The model folder.</param>
    /// <returns>An upscaler with the configured options and logger; its <c>With…</c> methods still override them.</returns>
    ModelUpscaler ForFolder(string folder);
}
