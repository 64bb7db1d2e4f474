namespace WeightEnsembling.Pareto;

/// <summary>The options of <see cref="ParetoTrainer"/>; the defaults follow FusionBench's PWEMoE configuration.</summary>
public sealed class ParetoTrainingOptions
{
    /// <summary>How per-task losses are combined. The default value is <see cref="ParetoScalarization.LinearScalarization"/>.</summary>
    public ParetoScalarization Scalarization { get; set; } = ParetoScalarization.LinearScalarization;

    /// <summary>The number of optimisation steps, at least 1. The default value is 2000.</summary>
    public int Steps { get; set; } = 2000;

    /// <summary>Adam's peak learning rate, positive. The default value is 0.01.</summary>
    public double LearningRate { get; set; } = 1e-2;

    /// <summary>The cosine schedule's floor as a fraction of <see cref="LearningRate"/>, in [0, 1]. The default value is 0.1.</summary>
    public double MinLearningRateRatio { get; set; } = 0.1;

    /// <summary>The concentration α of the symmetric Dirichlet distribution preferences are drawn from, positive. The default value is 1 (uniform on the simplex).</summary>
    public double DirichletAlpha { get; set; } = 1.0;

    /// <summary>The number of examples of each task per step, at least 1. The default value is 16.</summary>
    public int BatchSize { get; set; } = 16;

    /// <summary>The seed of the preference draws and of the batch order. The default value is 42.</summary>
    public int Seed { get; set; } = 42;

    /// <summary>EPO's non-uniformity threshold ε, non-negative. The default value is 1e-4.</summary>
    public double EpoEpsilon { get; set; } = 1e-4;

    /// <summary>The folder router checkpoints are written to, or <see langword="null"/> for none. The default value is <see langword="null"/>.</summary>
    public string? CheckpointFolder { get; set; }

    /// <summary>Write a router checkpoint every this many steps (and after the last), at least 1. The default value is 1000.</summary>
    public int CheckpointInterval { get; set; } = 1000;

    /// <summary>Throws if an option is out of range; the message names the option.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    public void Validate()
    {
        if (!Enum.IsDefined(Scalarization))
        {
            throw new ArgumentOutOfRangeException(nameof(Scalarization), Scalarization, "Unknown scalarization.");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(Steps, 1, nameof(Steps));
        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(BatchSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(CheckpointInterval, 1, nameof(CheckpointInterval));
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate))
        {
            throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "The learning rate must be positive and finite.");
        }

        if (!(MinLearningRateRatio >= 0 && MinLearningRateRatio <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(MinLearningRateRatio), MinLearningRateRatio, "The minimum learning-rate ratio must lie in [0, 1].");
        }

        if (!(DirichletAlpha > 0) || double.IsInfinity(DirichletAlpha))
        {
            throw new ArgumentOutOfRangeException(nameof(DirichletAlpha), DirichletAlpha, "The Dirichlet concentration must be positive and finite.");
        }

        if (!(EpoEpsilon >= 0) || double.IsInfinity(EpoEpsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(EpoEpsilon), EpoEpsilon, "EPO's ε must be non-negative and finite.");
        }
    }

    /// <summary>The learning rate at a 0-based step: cosine from <see cref="LearningRate"/> down to <see cref="MinLearningRateRatio"/> × it.</summary>
    /// <param name="step">The step, 0-based.</param>
    /// <returns>The learning rate.</returns>
    public double LearningRateAt(int step)
    {
        double floor = LearningRate * MinLearningRateRatio;
        double progress = Steps <= 1 ? 0 : Math.Clamp((double)step / (Steps - 1), 0, 1);
        return floor + (LearningRate - floor) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
