namespace WeightEnsembling.Training;

/// <summary>Trains a model's adaptable parameters on unlabelled test data of several tasks.</summary>
public interface ITestTimeAdapter
{
    /// <summary>
    /// Adapts <paramref name="model"/> to <paramref name="tasks"/>; on return (also after cancellation) the model is in
    /// evaluation mode with the parameters of the last completed step.
    /// </summary>
    /// <param name="model">The model to adapt; its trainable parameters are updated in place.</param>
    /// <param name="tasks">The tasks with their unlabelled data and heads.</param>
    /// <param name="options">The training options, or <see langword="null"/> for the defaults.</param>
    /// <param name="progress">Receives a report after every step, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Stops the run cleanly at the next step boundary.</param>
    /// <returns>What the run did.</returns>
    TestTimeAdaptationResult Adapt(
        IAdaptableModel model,
        IReadOnlyList<ClassificationTask> tasks,
        TestTimeAdaptationOptions? options = null,
        IProgress<TestTimeAdaptationProgress>? progress = null,
        CancellationToken cancellationToken = default);
}
