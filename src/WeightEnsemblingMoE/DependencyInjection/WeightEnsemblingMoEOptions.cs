using WeightEnsembling.Merging;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;

namespace WeightEnsembling.DependencyInjection;

/// <summary>
/// The options of every service that <c>AddWeightEnsemblingMoE</c> registers, one section per method, so that one
/// configuration section binds them all (e.g. <c>"WeightEnsemblingMoE:RegMean:Alpha": "0.9"</c>).
/// </summary>
public sealed class WeightEnsemblingMoEOptions
{
    /// <summary>The name of the configuration section the options are conventionally bound from: <c>WeightEnsemblingMoE</c>.</summary>
    public const string SectionName = "WeightEnsemblingMoE";

    /// <summary>The options of <see cref="IModelUpscalerFactory"/>'s upscalers. The default value is <c>new ModelUpscalerOptions()</c>.</summary>
    public ModelUpscalerOptions Upscaler { get; set; } = new();

    /// <summary>The options <see cref="ITestTimeAdapter"/> uses when a call gives none. The default value is <c>new AdaptationOptions()</c> (entropy, WEMoE defaults).</summary>
    public AdaptationOptions TestTimeAdaptation { get; set; } = new();

    /// <summary>The options of <see cref="IModelMerger.CreateAdaMerging"/>. The default value is <c>new AdaMergingOptions()</c>.</summary>
    public AdaMergingOptions AdaMerging { get; set; } = new();

    /// <summary>The options of <see cref="IModelMerger.Ties"/>. The default value is <c>new TiesMergingOptions()</c>.</summary>
    public TiesMergingOptions Ties { get; set; } = new();

    /// <summary>The options of <see cref="IModelMerger.RegMean"/>. The default value is <c>new RegMeanOptions()</c>.</summary>
    public RegMeanOptions RegMean { get; set; } = new();

    /// <summary>The options of <see cref="IModelMerger.Fisher"/>. The default value is <c>new FisherMergingOptions()</c>.</summary>
    public FisherMergingOptions Fisher { get; set; } = new();

    /// <summary>λ of <see cref="IModelMerger.TaskArithmetic"/>, θ = θ_0 + λ Σ_t τ_t; must be finite. The default value is 0.3.</summary>
    public double TaskArithmeticScalingFactor { get; set; } = 0.3;

    /// <summary>The number of examples per batch of <see cref="Evaluation.IModelEvaluator"/>; at least 1. The default value is 64.</summary>
    public int EvaluationBatchSize { get; set; } = Evaluation.ModelEvaluator.DefaultBatchSize;

    /// <summary>Checks every option, naming the first bad one by its path (e.g. <c>RegMean.Alpha</c>).</summary>
    /// <exception cref="ArgumentException">An option is missing or out of range.</exception>
    public void Validate()
    {
        Check(nameof(Upscaler), Upscaler, o => o.Validate());
        Check(nameof(TestTimeAdaptation), TestTimeAdaptation, o => o.Validate());
        Check(nameof(AdaMerging), AdaMerging, o => o.Validate());
        Check(nameof(Ties), Ties, o => o.Validate());
        Check(nameof(RegMean), RegMean, o => o.Validate());
        Check(nameof(Fisher), Fisher, o => o.Validate());
        if (!double.IsFinite(TaskArithmeticScalingFactor))
        {
            throw new ArgumentException(
                $"{nameof(TaskArithmeticScalingFactor)} must be finite; it is {TaskArithmeticScalingFactor}.", nameof(TaskArithmeticScalingFactor));
        }

        if (EvaluationBatchSize < 1)
        {
            throw new ArgumentException($"{nameof(EvaluationBatchSize)} must be at least 1; it is {EvaluationBatchSize}.", nameof(EvaluationBatchSize));
        }
    }

    private static void Check<T>(string section, T? options, Action<T> validate)
        where T : class
    {
        if (options is null)
        {
            throw new ArgumentException($"{section} must be set.", section);
        }

        try
        {
            validate(options);
        }
        catch (ArgumentException e)
        {
            string message = e.Message.Split(" (Parameter", 2)[0];
            throw new ArgumentException($"{section}.{e.ParamName}: {message}", $"{section}.{e.ParamName}", e);
        }
    }
}
