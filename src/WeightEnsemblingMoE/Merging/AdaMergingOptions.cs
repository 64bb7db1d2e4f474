using WeightEnsembling.Training;
namespace WeightEnsembling.Merging;

/// <summary>How <see cref="AdaMergingModel"/> merges: θ = θ_0 + Σ_t λ_t τ_t per parameter tensor, with learned λ.</summary>
public sealed class AdaMergingOptions
{
    /// <summary>Task-wise or layer-wise coefficients. The default value is <see cref="AdaMergingGranularity.LayerWise"/>.</summary>
    public AdaMergingGranularity Granularity { get; set; } = AdaMergingGranularity.LayerWise;

    /// <summary>The initial value of every coefficient. The default value is 0.3.</summary>
    public double InitLambda { get; set; } = 0.3;

    /// <summary>
    /// Whether the coefficients are clamped to [0, 1] when merging (FusionBench's <c>clamp_weights</c>). The default value
    /// is <see langword="false"/>.
    /// </summary>
    public bool Clamp { get; set; }

    /// <summary>Checks every option, naming the first bad one.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (!double.IsFinite(InitLambda))
        {
            throw new ArgumentException($"{nameof(InitLambda)} must be finite; it is {InitLambda}.", nameof(InitLambda));
        }

        if (!Enum.IsDefined(Granularity))
        {
            throw new ArgumentException($"{nameof(Granularity)} {(int)Granularity} is not defined.", nameof(Granularity));
        }
    }
}
