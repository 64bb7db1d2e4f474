namespace WeightEnsembling.Clip;

/// <summary>The MLP activation of a CLIP encoder layer (Hugging Face's <c>hidden_act</c>).</summary>
public enum ClipActivation
{
    /// <summary><c>quick_gelu</c>: x · σ(1.702 x), as in OpenAI's CLIP checkpoints.</summary>
    QuickGelu,

    /// <summary><c>gelu</c>: the exact (erf) GELU.</summary>
    Gelu,
}
