using WeightEnsembling.Clip;
using WeightEnsembling.Models;

namespace WeightEnsembling.Upscaling;

/// <summary>One-call entry points for the common case.</summary>
public static class Upscaler
{
    /// <summary>
    /// Upcycles a pre-trained CLIP vision model and its fine-tuned experts into a WEMoE model with the defaults: every
    /// MLP upscaled, 2-layer routers initialised at λ = 0.3, dense task vectors, everything else merged by task
    /// arithmetic with λ = 0.3. The inputs are not modified.
    /// </summary>
    /// <param name="pretrained">The pre-trained model θ_0.</param>
    /// <param name="finetuned">The fine-tuned experts θ_1..θ_T.</param>
    /// <returns>The upscaled model; the caller owns it.</returns>
    public static UpscaledModel Upcycle(ClipVisionModel pretrained, params IEnumerable<ClipVisionModel> finetuned) =>
        ModelUpscaler.For(pretrained).WithExperts(finetuned).Build();

    /// <summary>Upcycles a model pool (θ_0 and named experts, in memory or streamed from folders) with the same defaults.</summary>
    /// <param name="modelPool">The pool.</param>
    /// <returns>The upscaled model; the caller owns it.</returns>
    public static UpscaledModel Upcycle(ModelPool modelPool) => ModelUpscaler.For(modelPool).Build();
}
