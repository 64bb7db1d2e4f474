namespace WeightEnsembling.Training;

/// <summary>What a test-time adaptation run reports after each optimisation step.</summary>
/// <param name="Step">The number of steps completed so far (1-based; counts steps restored from a checkpoint).</param>
/// <param name="TotalSteps">The number of steps the run will take in all.</param>
/// <param name="Losses">The entropy loss of each task at this step, by task name.</param>
/// <param name="LearningRate">The learning rate used for this step.</param>
/// <param name="Elapsed">The time spent in this run so far (not counting a resumed run's earlier time).</param>
/// <param name="Eta">The estimated time to finish, from the mean step time of this run.</param>
public sealed record TestTimeAdaptationProgress(
    int Step,
    int TotalSteps,
    IReadOnlyDictionary<string, double> Losses,
    double LearningRate,
    TimeSpan Elapsed,
    TimeSpan Eta)
{
    /// <summary>The sum of the task losses: the objective of the step.</summary>
    public double TotalLoss => Losses.Values.Sum();
}
