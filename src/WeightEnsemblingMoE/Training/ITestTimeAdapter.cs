using WeightEnsembling.Tasks;
namespace WeightEnsembling.Training;

/// <summary>
/// Trains a model's adaptable parameters (routers, merging coefficients) on the data of several tasks: the entry point
/// that dependency injection registers (<see cref="AdaptationTrainer"/>).
/// </summary>
public interface ITestTimeAdapter
{
    /// <summary>
    /// Trains <paramref name="model"/> on <paramref name="tasks"/>; on return, and when cancelled or failing, the model is
    /// in evaluation mode with the parameters of the last completed step.
    /// </summary>
    /// <param name="model">The model to train; its trainable parameters are updated in place.</param>
    /// <param name="tasks">The tasks with their data and heads (for <see cref="ParetoObjective"/>: labelled, in the model's task order).</param>
    /// <param name="options">The training options, or <see langword="null"/> for the adapter's defaults.</param>
    /// <param name="progress">Receives a report after every step, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Stops the run at the next step boundary with <see cref="OperationCanceledException"/>.</param>
    /// <returns>What the run did.</returns>
    AdaptationResult Adapt(
        IAdaptableModel model,
        IReadOnlyList<ClassificationTask> tasks,
        AdaptationOptions? options = null,
        IProgress<AdaptationProgress>? progress = null,
        CancellationToken cancellationToken = default);
}
