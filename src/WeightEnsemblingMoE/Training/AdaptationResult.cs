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
    TimeSpan Elapsed)
{
    /// <summary>
    /// The step whose trainable parameters the model holds after <see cref="AdaptationOptions.EarlyStopping"/> restored
    /// the best check's (0: the starting parameters), or <see langword="null"/> when the run had no early stopping.
    /// </summary>
    public int? RestoredStep { get; init; }

    /// <summary>
    /// The held-out entropy at each check of <see cref="AdaptationOptions.EarlyStopping"/> (step, mean over tasks of each
    /// task's mean entropy in nats), in order; empty without early stopping.
    /// </summary>
    public IReadOnlyList<KeyValuePair<int, double>> HeldOutEntropy { get; init; } = [];
}
