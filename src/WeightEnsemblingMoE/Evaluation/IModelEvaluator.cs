using WeightEnsembling.Clip;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.Evaluation;

/// <summary>
/// Evaluates models of every method on labelled tasks with the application's batch size and logger, registered by
/// <c>AddWeightEnsemblingMoE</c>; see <see cref="ModelEvaluator"/> for what is measured.
/// </summary>
public interface IModelEvaluator
{
    /// <summary>Evaluates a plain CLIP vision model (pre-trained, an expert, or a merged one).</summary>
    /// <param name="method">The method name for the report.</param>
    /// <param name="model">The model.</param>
    /// <param name="tasks">The tasks, with labelled data.</param>
    /// <param name="progress">Receives each task's score, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, tasks in the given order.</returns>
    EvaluationReport Evaluate(
        string method, ClipVisionModel model, IReadOnlyList<ClassificationTask> tasks, IProgress<TaskScore>? progress = null, CancellationToken cancellationToken = default);

    /// <summary>Evaluates an upscaled (WEMoE) model with per-sample routing; its routing mode is restored afterwards.</summary>
    /// <param name="method">The method name for the report.</param>
    /// <param name="model">The model.</param>
    /// <param name="tasks">The tasks, with labelled data.</param>
    /// <param name="progress">Receives each task's score, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, tasks in the given order.</returns>
    EvaluationReport Evaluate(
        string method, UpscaledModel model, IReadOnlyList<ClassificationTask> tasks, IProgress<TaskScore>? progress = null, CancellationToken cancellationToken = default);

    /// <summary>Evaluates any adaptable model in evaluation mode.</summary>
    /// <param name="method">The method name for the report, or <see langword="null"/> for <see cref="IAdaptableModel.Method"/>.</param>
    /// <param name="model">The model.</param>
    /// <param name="tasks">The tasks, with labelled data.</param>
    /// <param name="progress">Receives each task's score, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, tasks in the given order.</returns>
    EvaluationReport Evaluate(
        string? method, IAdaptableModel model, IReadOnlyList<ClassificationTask> tasks, IProgress<TaskScore>? progress = null, CancellationToken cancellationToken = default);
}
