using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Moe;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Evaluation;

/// <summary>
/// One evaluation for every method: each task's accuracy on its labelled test data, read through the task's own head
/// from the model's image features, and the average. Upscaled models are evaluated with per-sample routing, so results
/// do not depend on how the test data are batched. Everything runs on the model's device (that of its parameters): the
/// tasks' heads are moved there (in place, as <c>Module.to</c> does), and each batch's images and labels are copied there.
/// </summary>
public static class ModelEvaluator
{
    /// <summary>The default number of examples per evaluation batch.</summary>
    public const int DefaultBatchSize = 64;

    /// <summary>Evaluates a plain CLIP vision model (pre-trained, an expert, or a merged one).</summary>
    /// <param name="method">The method name for the report.</param>
    /// <param name="model">The model.</param>
    /// <param name="tasks">The tasks, with labelled data.</param>
    /// <param name="batchSize">Examples per batch. The default value is 64.</param>
    /// <param name="progress">Receives each task's score, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, tasks in the given order.</returns>
    public static EvaluationReport Evaluate(
        string method,
        ClipVisionModel model,
        IReadOnlyList<ClassificationTask> tasks,
        int batchSize = DefaultBatchSize,
        IProgress<TaskScore>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        bool wasTraining = model.training;
        model.eval();
        try
        {
            return Evaluate(method, model.GetImageFeatures, DeviceOf.Module(model), tasks, batchSize, progress, cancellationToken);
        }
        finally
        {
            model.train(wasTraining);
        }
    }

    /// <summary>Evaluates an upscaled (WEMoE) model with per-sample routing; its routing mode is restored afterwards.</summary>
    /// <param name="method">The method name for the report.</param>
    /// <param name="model">The model.</param>
    /// <param name="tasks">The tasks, with labelled data.</param>
    /// <param name="batchSize">Examples per batch. The default value is 64.</param>
    /// <param name="progress">Receives each task's score, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, tasks in the given order.</returns>
    public static EvaluationReport Evaluate(
        string method,
        UpscaledModel model,
        IReadOnlyList<ClassificationTask> tasks,
        int batchSize = DefaultBatchSize,
        IProgress<TaskScore>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        var modes = model.Modules.Select(m => m.Module.RoutingMode).ToList();
        model.RoutingMode = RoutingMode.PerSample;
        try
        {
            return Evaluate(method, model.Model, tasks, batchSize, progress, cancellationToken);
        }
        finally
        {
            for (int i = 0; i < modes.Count; i++)
            {
                model.Modules[i].Module.RoutingMode = modes[i];
            }
        }
    }

    /// <summary>Evaluates any adaptable model, switched to evaluation mode (<see cref="IAdaptableModel.SetTraining"/> false).</summary>
    /// <param name="method">The method name for the report, or <see langword="null"/> for <see cref="IAdaptableModel.Method"/>.</param>
    /// <param name="model">The model.</param>
    /// <param name="tasks">The tasks, with labelled data.</param>
    /// <param name="batchSize">Examples per batch. The default value is 64.</param>
    /// <param name="progress">Receives each task's score, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, tasks in the given order.</returns>
    public static EvaluationReport Evaluate(
        string? method,
        IAdaptableModel model,
        IReadOnlyList<ClassificationTask> tasks,
        int batchSize = DefaultBatchSize,
        IProgress<TaskScore>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        model.SetTraining(false);
        return Evaluate(method ?? model.Method, model.Features, DeviceOf.Model(model), tasks, batchSize, progress, cancellationToken);
    }

    private static EvaluationReport Evaluate(
        string method,
        Func<Tensor, Tensor> features,
        Device device,
        IReadOnlyList<ClassificationTask> tasks,
        int batchSize,
        IProgress<TaskScore>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(method);
        ClassificationTask.Check(tasks, nameof(tasks));
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        foreach (var task in tasks)
        {
            if (!task.Data.HasLabels)
            {
                throw new ArgumentException($"Task '{task.Name}': dataset '{task.Data.Name}' has no labels, so accuracy cannot be measured.", nameof(tasks));
            }
        }

        DeviceOf.MoveHeads(tasks, device);
        var pairs = tasks.Select(t => (t.Data, (Func<Tensor, Tensor>)(images => t.Logits(DeviceOf.On(images, device), features))));
        var report = TaskEvaluator.Evaluate(method, pairs, batchSize, progress, cancellationToken);
        return report;
    }
}
