using WeightEnsembling.Pareto;

namespace WeightEnsembling.Training;

/// <summary>
/// How <see cref="AdaptationTrainer"/> trains: Adam on the model's trainable parameters only, minimising
/// <see cref="Objective"/> on one batch per task per step. The defaults are FusionBench's for WEMoE (entropy, learning
/// rate 1e-4, 1000 steps, batch 16); <see cref="ForAdaMerging"/> and <see cref="ForPwemoe"/> give the other methods'.
/// </summary>
public sealed class AdaptationOptions
{
    /// <summary>What each step minimises. The default value is a new <see cref="EntropyObjective"/>.</summary>
    public AdaptationObjective Objective { get; set; } = new EntropyObjective();

    /// <summary>The Adam learning rate (peak rate with <see cref="CosineSchedule"/>). The default value is 1e-4.</summary>
    public double LearningRate { get; set; } = 1e-4;

    /// <summary>The number of optimisation steps in all (a resumed run continues up to it). The default value is 1000.</summary>
    public int Steps { get; set; } = 1000;

    /// <summary>The number of examples per task in each step. The default value is 16.</summary>
    public int BatchSize { get; set; } = 16;

    /// <summary>
    /// The seed of the data order (task i draws its batches from <c>Endless(BatchSize, Seed + i)</c>) and of the objective's
    /// own draws (the preferences of <see cref="ParetoObjective"/>). The default value is 0.
    /// </summary>
    public int Seed { get; set; }

    /// <summary>
    /// Whether the learning rate follows a cosine from <see cref="LearningRate"/> down to
    /// <see cref="MinLearningRateRatio"/> × it over <see cref="Steps"/> or <see cref="CosineSteps"/> (PyTorch's
    /// <c>CosineAnnealingLR</c> with <c>T_max = CosineSteps ?? Steps</c> and <c>eta_min = MinLearningRateRatio × LearningRate</c>). The default value is <see langword="false"/>.
    /// </summary>
    public bool CosineSchedule { get; set; }

    /// <summary>
    /// The cosine schedule's length T_max in steps, when it differs from <see cref="Steps"/>: the original WEMoE repository
    /// anneals over 1,000 steps whatever the run's length. Past T_max the rate follows PyTorch's closed form (it rises
    /// again). The default value is <see langword="null"/> (T_max = <see cref="Steps"/>).
    /// </summary>
    public int? CosineSteps { get; set; }

    /// <summary>The cosine schedule's floor as a fraction of <see cref="LearningRate"/>, in [0, 1]. The default value is 0.</summary>
    public double MinLearningRateRatio { get; set; }

    /// <summary>Adam's β1. The default value is 0.9.</summary>
    public double Beta1 { get; set; } = 0.9;

    /// <summary>Adam's β2. The default value is 0.999.</summary>
    public double Beta2 { get; set; } = 0.999;

    /// <summary>Adam's ε. The default value is 1e-8.</summary>
    public double Epsilon { get; set; } = 1e-8;

    /// <summary>
    /// The folder that holds the run's checkpoint, replaced atomically at each save, or <see langword="null"/> for none: the
    /// model's <c>SavePretrained</c> files (so the folder also loads with the model's <c>FromPretrained</c>), the Adam state
    /// (<c>optimizer.safetensors</c>) and the trainer state (<c>trainer_state.json</c>). The default value is <see langword="null"/>.
    /// </summary>
    public string? CheckpointFolder { get; set; }

    /// <summary>
    /// Save a checkpoint every this many steps; one is also saved after the last step and when the run is cancelled. 0
    /// saves only then. The default value is 0.
    /// </summary>
    public int CheckpointInterval { get; set; }

    /// <summary>
    /// A checkpoint folder to resume from: the trainable weights, the Adam state, the step and the data and preference
    /// positions are restored and training continues up to <see cref="Steps"/>, bit for bit as an uninterrupted run. The
    /// default value is <see langword="null"/>.
    /// </summary>
    public string? ResumeFrom { get; set; }

    /// <summary>
    /// A safeguard beyond the papers (L2-SP): adds (AnchorStrength / 2) · Σ‖θ − θ₀‖² over the trainable parameters to each
    /// step's loss, θ₀ being their values when the run started, so the routers (and so the routing) are pulled back towards
    /// where they started (task arithmetic's λ for WEMoE's routers, whose last layer starts at zero weight and bias λ). 0
    /// turns it off. A checkpoint keeps θ₀, so a resumed run pulls towards the same point. The default value is 0.
    /// </summary>
    public double AnchorStrength { get; set; }

    /// <summary>
    /// A safeguard beyond the papers: stop on the entropy of held-out unlabelled images and keep the best check's
    /// parameters, or <see langword="null"/> for none. It cannot be combined with <see cref="CheckpointFolder"/> or
    /// <see cref="ResumeFrom"/> (the best parameters are not part of a checkpoint). The default value is
    /// <see langword="null"/>.
    /// </summary>
    public EarlyStopping? EarlyStopping { get; set; }

    /// <summary>The defaults with AdaMerging's learning rate, 1e-3.</summary>
    /// <returns>New options.</returns>
    public static AdaptationOptions ForAdaMerging() => new() { LearningRate = 1e-3 };

    /// <summary>
    /// FusionBench's PWEMoE configuration: a <see cref="ParetoObjective"/> with Dirichlet(1) preferences, learning rate
    /// 1e-2 on a cosine down to a tenth, 2000 steps, batch 16, seed 42.
    /// </summary>
    /// <param name="scalarization">How the task losses are combined.</param>
    /// <returns>New options.</returns>
    public static AdaptationOptions ForPwemoe(ParetoScalarization scalarization = ParetoScalarization.LinearScalarization) => new()
    {
        Objective = new ParetoObjective { Scalarization = scalarization },
        LearningRate = 1e-2,
        Steps = 2000,
        Seed = 42,
        CosineSchedule = true,
        MinLearningRateRatio = 0.1,
    };

    /// <summary>Checks every option and the objective's settings, naming the first bad one.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    /// <exception cref="ArgumentException">The objective is missing, or <see cref="CheckpointInterval"/> is set without <see cref="CheckpointFolder"/>.</exception>
    public void Validate()
    {
        if (Objective is null)
        {
            throw new ArgumentException($"{nameof(Objective)} must be set.", nameof(Objective));
        }

        Positive(LearningRate, nameof(LearningRate));
        ArgumentOutOfRangeException.ThrowIfLessThan(Steps, 1, nameof(Steps));
        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(BatchSize));
        if (CosineSteps is int cosineSteps)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(cosineSteps, 1, nameof(CosineSteps));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(CheckpointInterval, nameof(CheckpointInterval));
        InRange(MinLearningRateRatio, 0, 1, upperOpen: false, nameof(MinLearningRateRatio));
        InRange(Beta1, 0, 1, upperOpen: true, nameof(Beta1));
        InRange(Beta2, 0, 1, upperOpen: true, nameof(Beta2));
        if (!double.IsFinite(Epsilon) || Epsilon < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, $"{nameof(Epsilon)} must be non-negative and finite.");
        }

        if (!double.IsFinite(AnchorStrength) || AnchorStrength < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(AnchorStrength), AnchorStrength, $"{nameof(AnchorStrength)} must be non-negative and finite.");
        }

        if (EarlyStopping is not null)
        {
            EarlyStopping.Validate();
            if (CheckpointFolder is not null || ResumeFrom is not null)
            {
                throw new ArgumentException(
                    $"{nameof(EarlyStopping)} cannot be combined with {nameof(CheckpointFolder)} or {nameof(ResumeFrom)}: the best parameters it restores are not part of a checkpoint.",
                    nameof(EarlyStopping));
            }
        }

        if (CheckpointInterval > 0 && string.IsNullOrWhiteSpace(CheckpointFolder))
        {
            throw new ArgumentException($"{nameof(CheckpointInterval)} is {CheckpointInterval} but no {nameof(CheckpointFolder)} is set.", nameof(CheckpointFolder));
        }

        Objective.Validate();
    }

    /// <summary>The learning rate of the 0-based step <paramref name="step"/> (the step that completes as step + 1).</summary>
    /// <param name="step">The step index, 0 ≤ step &lt; <see cref="Steps"/>.</param>
    /// <returns>The rate.</returns>
    public double LearningRateAt(int step)
    {
        if (!CosineSchedule)
        {
            return LearningRate;
        }

        double floor = LearningRate * MinLearningRateRatio;
        return floor + ((LearningRate - floor) * 0.5 * (1 + Math.Cos(Math.PI * step / (CosineSteps ?? Steps))));
    }

    /// <summary>A copy of these options (the objective, whose settings are init-only, is shared).</summary>
    /// <returns>The copy.</returns>
    public AdaptationOptions Clone() => (AdaptationOptions)MemberwiseClone();

    private static void Positive(double value, string name)
    {
        if (!double.IsFinite(value) || value <= 0)
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be a positive finite number.");
        }
    }

    private static void InRange(double value, double low, double high, bool upperOpen, string name)
    {
        bool ok = value >= low && (upperOpen ? value < high : value <= high);
        if (!ok)
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must lie in [{low}, {high}{(upperOpen ? ")" : "]")}.");
        }
    }
}
