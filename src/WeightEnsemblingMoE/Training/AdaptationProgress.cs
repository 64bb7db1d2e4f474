using WeightEnsembling.Pareto;

namespace WeightEnsembling.Training;

/// <summary>What <see cref="AdaptationTrainer"/> reports after each optimisation step.</summary>
/// <param name="Step">
/// The number of steps completed so far: 1 after the first step, <paramref name="TotalSteps"/> after the last (counts
/// steps restored from a checkpoint). The learning rate of this step is <see cref="AdaptationOptions.LearningRateAt"/>(Step − 1).
/// </param>
/// <param name="TotalSteps">The number of steps the run will take in all.</param>
/// <param name="Losses">Each task's loss at this step (entropy or cross-entropy), by task name.</param>
/// <param name="Loss">The loss that was minimised: the sum of the task entropies, or the scalarized cross-entropies.</param>
/// <param name="LearningRate">The learning rate used for this step.</param>
/// <param name="Preference">The preference the step trained at (<see cref="ParetoObjective"/>), or <see langword="null"/>.</param>
/// <param name="EpoMove">EPO's linear program of the step, or <see langword="null"/> for other objectives.</param>
/// <param name="Checkpoint">The checkpoint folder written after this step, or <see langword="null"/>.</param>
/// <param name="Elapsed">The time spent in this run so far (not counting a resumed run's earlier time).</param>
/// <param name="Eta">The estimated time to finish, from the mean step time of this run.</param>
public sealed record AdaptationProgress(
    int Step,
    int TotalSteps,
    IReadOnlyDictionary<string, double> Losses,
    double Loss,
    double LearningRate,
    IReadOnlyList<double>? Preference,
    EpoMove? EpoMove,
    string? Checkpoint,
    TimeSpan Elapsed,
    TimeSpan Eta);
