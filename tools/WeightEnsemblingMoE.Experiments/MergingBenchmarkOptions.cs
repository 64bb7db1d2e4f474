using WeightEnsembling.Moe;

namespace WeightEnsembling.Experiments;

/// <summary>Options of <see cref="MergingBenchmark"/>.</summary>
public sealed class MergingBenchmarkOptions
{
    /// <summary>The methods to run, in order. The default value is every <see cref="MergingMethod"/>.</summary>
    public IReadOnlyList<MergingMethod> Methods { get; set; } = Enum.GetValues<MergingMethod>();

    /// <summary>Test-time adaptation steps for WEMoE, E-WEMoE and AdaMerging. The default value is 1000 (FusionBench's).</summary>
    public int AdaptationSteps { get; set; } = 1000;

    /// <summary>Learning rate of the routers' test-time adaptation. The default value is 1e-4 (FusionBench's).</summary>
    public double WemoeLearningRate { get; set; } = 1e-4;

    /// <summary>Learning rate of AdaMerging. The default value is 1e-3.</summary>
    public double AdaMergingLearningRate { get; set; } = 1e-3;

    /// <summary>Batch size per task for test-time adaptation. The default value is 16.</summary>
    public int BatchSize { get; set; } = 16;

    /// <summary>
    /// Batch size for evaluation. The default value is 64 (on the CPU, small ViTs run several times faster per image at 64
    /// than at 256, whose activations no longer fit in cache; results do not depend on it).
    /// </summary>
    public int EvaluationBatchSize { get; set; } = 64;

    /// <summary>The λ values searched on validation for task arithmetic and TIES. The default value is 0.1, 0.2, …, 1.0.</summary>
    public IReadOnlyList<double> LambdaGrid { get; set; } = Enumerable.Range(1, 10).Select(i => i / 10.0).ToArray();

    /// <summary>Rank of the low-rank WEMoE task vectors. The default value is 16.</summary>
    public int LowRank { get; set; } = 16;

    /// <summary>Training steps of PWEMoE (linear scalarization). The default value is 500.</summary>
    public int ParetoSteps { get; set; } = 500;

    /// <summary>Examples per task for Fisher merging and RegMean. The default value is 256.</summary>
    public int DataAwareExamples { get; set; } = 256;

    /// <summary>
    /// The routing WEMoE's routers train with: <see cref="RoutingMode.BatchReduce"/> (FusionBench's recipe, the default
    /// value) or <see cref="RoutingMode.PerSample"/> (the original repository's). Evaluation always routes per sample.
    /// </summary>
    public RoutingMode WemoeTrainingRouting { get; set; } = RoutingMode.BatchReduce;

    /// <summary>
    /// The length of WEMoE's cosine learning-rate schedule in steps, or <see langword="null"/> for a constant learning
    /// rate (FusionBench's recipe, the default value). The original repository anneals over 1,000 steps.
    /// </summary>
    public int? WemoeCosineSteps { get; set; }

    /// <summary>
    /// Whether the WEMoE heads read the pre-trained model's <c>visual_projection</c> (FusionBench) rather than the
    /// task-arithmetic-merged one (the original repository). The default value is <see langword="false"/>.
    /// </summary>
    public bool WemoePretrainedProjection { get; set; }

    /// <summary>
    /// λ of WEMoE's task-arithmetic start (the non-MLP weights, and the routers' initial output), or
    /// <see langword="null"/> for the papers' 0.3 (the default value). <see cref="MergingBenchmark.TaskArithmeticLambda"/>
    /// gives the λ validation picks for task arithmetic, to start WEMoE on equal footing.
    /// </summary>
    public double? WemoeInitLambda { get; set; }

    /// <summary>
    /// Safeguard beyond the papers: <see cref="Training.AdaptationOptions.AnchorStrength"/> of WEMoE's adaptation (a pull
    /// of the routers towards their start). The default value is 0 (off).
    /// </summary>
    public double WemoeAnchorStrength { get; set; }

    /// <summary>
    /// Safeguard beyond the papers: <see cref="Training.EntropyObjective.DiversityWeight"/> of WEMoE's entropy objective
    /// (against the collapse to one class). The default value is 0 (off).
    /// </summary>
    public double WemoeDiversityWeight { get; set; }

    /// <summary>
    /// Safeguard beyond the papers: the check interval of <see cref="Training.EarlyStopping"/> for WEMoE's adaptation, on
    /// each task's validation images used unlabelled, patience 3; <see langword="null"/> for none (the default value).
    /// </summary>
    public int? WemoeEarlyStoppingInterval { get; set; }

    /// <summary>The seed of every random choice. The default value is 0.</summary>
    public int Seed { get; set; }

    /// <summary>Checks the options, naming the first bad one.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (Methods is null || Methods.Count == 0)
        {
            throw new ArgumentException($"{nameof(Methods)} must name at least one method.", nameof(Methods));
        }

        if (AdaptationSteps < 1 || ParetoSteps < 1 || BatchSize < 1 || EvaluationBatchSize < 1 || DataAwareExamples < 1 || LowRank < 1)
        {
            throw new ArgumentException(
                $"{nameof(AdaptationSteps)}, {nameof(ParetoSteps)}, {nameof(BatchSize)}, {nameof(EvaluationBatchSize)}, {nameof(DataAwareExamples)} and {nameof(LowRank)} must be positive.");
        }

        if (LambdaGrid is null || LambdaGrid.Count == 0 || LambdaGrid.Any(l => !double.IsFinite(l)))
        {
            throw new ArgumentException($"{nameof(LambdaGrid)} must hold finite values.", nameof(LambdaGrid));
        }

        if (WemoeCosineSteps is < 1)
        {
            throw new ArgumentException($"{nameof(WemoeCosineSteps)} must be positive when set; got {WemoeCosineSteps}.", nameof(WemoeCosineSteps));
        }

        if (WemoeInitLambda is { } lambda && !double.IsFinite(lambda))
        {
            throw new ArgumentException($"{nameof(WemoeInitLambda)} must be finite; got {lambda}.", nameof(WemoeInitLambda));
        }

        if (!double.IsFinite(WemoeAnchorStrength) || WemoeAnchorStrength < 0 || !double.IsFinite(WemoeDiversityWeight) || WemoeDiversityWeight < 0)
        {
            throw new ArgumentException($"{nameof(WemoeAnchorStrength)} and {nameof(WemoeDiversityWeight)} must be non-negative and finite.");
        }

        if (WemoeEarlyStoppingInterval is < 1)
        {
            throw new ArgumentException($"{nameof(WemoeEarlyStoppingInterval)} must be positive when set; got {WemoeEarlyStoppingInterval}.", nameof(WemoeEarlyStoppingInterval));
        }

        if (!(WemoeLearningRate > 0) || !(AdaMergingLearningRate > 0))
        {
            throw new ArgumentException($"{nameof(WemoeLearningRate)} and {nameof(AdaMergingLearningRate)} must be positive.");
        }
    }
}
