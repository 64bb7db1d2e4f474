namespace WeightEnsembling.Training;

/// <summary>The outcome of a completed <see cref="AdaptationTrainer"/> run (a cancelled run throws instead).</summary>
/// <param name="StartStep">The step the run started from: 0, or the step of the checkpoint it resumed.</param>
/// <param name="StepsCompleted">The number of steps completed in all (including resumed ones).</param>
/// <param name="FinalLosses">The task losses of the last step run, by task name (empty if no step ran).</param>
/// <param name="Elapsed">The time spent in this run.</param>
public sealed record AdaptationResult(
    int StartStep,
    int StepsCompleted,
    IReadOnlyDictionary<string, double> FinalLosses,
    TimeSpan Elapsed);
