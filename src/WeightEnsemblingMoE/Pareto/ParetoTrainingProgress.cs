namespace WeightEnsembling.Pareto;

/// <summary>What one step of <see cref="ParetoTrainer"/> did.</summary>
/// <param name="Step">The step, 1-based.</param>
/// <param name="TotalSteps">The number of steps of the run.</param>
/// <param name="Preference">The preference drawn for the step.</param>
/// <param name="TaskLosses">The cross-entropy of each task's batch.</param>
/// <param name="Loss">The scalarized loss that was minimised.</param>
/// <param name="LearningRate">The learning rate of the step.</param>
/// <param name="EpoMove">The EPO linear program of the step, or <see langword="null"/> for linear scalarization.</param>
/// <param name="Checkpoint">The router checkpoint written after the step, or <see langword="null"/>.</param>
public sealed record ParetoTrainingProgress(
    int Step,
    int TotalSteps,
    IReadOnlyList<double> Preference,
    IReadOnlyList<double> TaskLosses,
    double Loss,
    double LearningRate,
    EpoMove? EpoMove,
    string? Checkpoint);
