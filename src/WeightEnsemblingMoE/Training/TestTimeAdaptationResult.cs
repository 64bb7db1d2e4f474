namespace WeightEnsembling.Training;

/// <summary>The outcome of a test-time adaptation run.</summary>
/// <param name="StartStep">The step the run started from: 0, or the step of the checkpoint it resumed.</param>
/// <param name="StepsCompleted">The number of steps completed in all (including resumed ones).</param>
/// <param name="Cancelled">Whether the run stopped early, at a step boundary, because cancellation was requested.</param>
/// <param name="FinalLosses">The task losses of the last step run, by task name (empty if no step ran).</param>
/// <param name="Elapsed">The time spent in this run.</param>
public sealed record TestTimeAdaptationResult(
    int StartStep,
    int StepsCompleted,
    bool Cancelled,
    IReadOnlyDictionary<string, double> FinalLosses,
    TimeSpan Elapsed);
