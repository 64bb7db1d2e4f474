using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Evaluation;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Training;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Pareto;

/// <summary>
/// Evaluates a Pareto set on a grid of preferences (usually <see cref="SimplexGrid.Generate"/>), and the baselines it is
/// compared with: task arithmetic with per-task scaling factors on the same grid, and the individual fine-tuned models as
/// the corner points.
/// </summary>
public static class ParetoSetEvaluator
{
    /// <summary>Evaluates a Pareto model at every preference: each task's accuracy and loss through its head.</summary>
    /// <param name="model">The Pareto model; its preference is left at the last grid point.</param>
    /// <param name="tasks">One labelled task (dataset and head) per task, in the model's task order.</param>
    /// <param name="preferences">The preferences to evaluate.</param>
    /// <param name="batchSize">The evaluation batch size, at least 1.</param>
    /// <param name="method">The method name of the report. The default value is <c>PWEMoE</c>.</param>
    /// <param name="referencePoint">The hypervolume reference (accuracies). The default value is <see langword="null"/> (all zeros).</param>
    /// <param name="progress">Receives each point as it is evaluated, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report.</returns>
    public static ParetoEvaluationReport Evaluate(
        ParetoUpscaledModel model,
        IReadOnlyList<ClassificationTask> tasks,
        IReadOnlyList<IReadOnlyList<double>> preferences,
        int batchSize,
        string method = "PWEMoE",
        IReadOnlyList<double>? referencePoint = null,
        IProgress<ParetoPoint>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        CheckTasks(tasks, model.TaskCount);
        return EvaluateCore(method, tasks, preferences, batchSize, referencePoint, progress, cancellationToken, preference =>
        {
            model.SetPreference(preference);
            return (model.Model.GetImageFeatures, null);
        });
    }

    /// <summary>
    /// The task-arithmetic baseline on a grid: at preference p the model θ_0 + Σ_t (s · p_t) τ_t, so the grid's corners are
    /// the fine-tuned models themselves when s = 1.
    /// </summary>
    /// <param name="pretrained">The pre-trained model θ_0 (not modified).</param>
    /// <param name="experts">The fine-tuned models θ_t, in task order (not modified).</param>
    /// <param name="tasks">One labelled task (dataset and head) per task, in the experts' order.</param>
    /// <param name="preferences">The grid.</param>
    /// <param name="batchSize">The evaluation batch size, at least 1.</param>
    /// <param name="scalingFactor">The overall scale s of the per-task factors s · p_t. The default value is 1.</param>
    /// <param name="referencePoint">The hypervolume reference (accuracies). The default value is <see langword="null"/> (all zeros).</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, method <c>Task Arithmetic</c>.</returns>
    public static ParetoEvaluationReport EvaluateTaskArithmetic(
        ClipVisionModel pretrained,
        IReadOnlyList<ClipVisionModel> experts,
        IReadOnlyList<ClassificationTask> tasks,
        IReadOnlyList<IReadOnlyList<double>> preferences,
        int batchSize,
        double scalingFactor = 1.0,
        IReadOnlyList<double>? referencePoint = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(experts);
        return EvaluateTaskArithmetic(ModelPool.FromModels(pretrained, experts), tasks, preferences, batchSize, scalingFactor, referencePoint, cancellationToken);
    }

    /// <summary>
    /// Task arithmetic over a model pool at each preference p: θ_0 + Σ_t s·p_t τ_t, merged by the pool (streamed expert by
    /// expert) once per preference; the baseline a Pareto set is compared with.
    /// </summary>
    /// <param name="modelPool">θ_0 and the experts, in task order.</param>
    /// <param name="tasks">One labelled task (dataset and head) per task, in the experts' order.</param>
    /// <param name="preferences">The preferences to evaluate.</param>
    /// <param name="batchSize">The evaluation batch size, at least 1.</param>
    /// <param name="scalingFactor">The overall scale s of the per-task factors s · p_t. The default value is 1.</param>
    /// <param name="referencePoint">The hypervolume reference (accuracies). The default value is <see langword="null"/> (all zeros).</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, method <c>Task Arithmetic</c>.</returns>
    public static ParetoEvaluationReport EvaluateTaskArithmetic(
        ModelPool modelPool,
        IReadOnlyList<ClassificationTask> tasks,
        IReadOnlyList<IReadOnlyList<double>> preferences,
        int batchSize,
        double scalingFactor = 1.0,
        IReadOnlyList<double>? referencePoint = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(modelPool);
        CheckTasks(tasks, modelPool.ExpertCount);
        if (!double.IsFinite(scalingFactor))
        {
            throw new ArgumentOutOfRangeException(nameof(scalingFactor), scalingFactor, "The scaling factor must be finite.");
        }

        return EvaluateCore("Task Arithmetic", tasks, preferences, batchSize, referencePoint, null, cancellationToken, preference =>
        {
            var weights = modelPool.TaskArithmetic(preference.Select(p => scalingFactor * p).ToArray());
            try
            {
                var merged = modelPool.BuildModel(weights);
                return (merged.GetImageFeatures, merged);
            }
            finally
            {
                foreach (var tensor in weights.Values)
                {
                    tensor.Dispose();
                }
            }
        });
    }

    /// <summary>The individual fine-tuned models as corner points: point t is expert t at preference e_t.</summary>
    /// <param name="experts">The fine-tuned models, in task order (not modified).</param>
    /// <param name="tasks">One labelled task (dataset and head) per task, in the experts' order.</param>
    /// <param name="batchSize">The evaluation batch size, at least 1.</param>
    /// <param name="referencePoint">The hypervolume reference (accuracies). The default value is <see langword="null"/> (all zeros).</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, method <c>Individual</c>.</returns>
    public static ParetoEvaluationReport EvaluateExperts(
        IReadOnlyList<ClipVisionModel> experts,
        IReadOnlyList<ClassificationTask> tasks,
        int batchSize,
        IReadOnlyList<double>? referencePoint = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(experts);
        CheckTasks(tasks, experts.Count);
        var corners = Enumerable.Range(0, experts.Count)
            .Select(t => (IReadOnlyList<double>)Enumerable.Range(0, experts.Count).Select(k => k == t ? 1.0 : 0.0).ToArray())
            .ToList();
        int corner = 0;
        return EvaluateCore("Individual", tasks, corners, batchSize, referencePoint, null, cancellationToken, _ =>
        {
            var expert = experts[corner++];
            return (expert.GetImageFeatures, null);
        });
    }

    private static ParetoEvaluationReport EvaluateCore(
        string method,
        IReadOnlyList<ClassificationTask> tasks,
        IReadOnlyList<IReadOnlyList<double>> preferences,
        int batchSize,
        IReadOnlyList<double>? referencePoint,
        IProgress<ParetoPoint>? progress,
        CancellationToken cancellationToken,
        Func<double[], (Func<Tensor, Tensor> Features, IDisposable? Owned)> select)
    {
        ArgumentNullException.ThrowIfNull(preferences);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var points = new List<ParetoPoint>(preferences.Count);
        for (int i = 0; i < preferences.Count; i++)
        {
            var preference = Preferences.Check(preferences[i], tasks.Count, nameof(preferences));
            var (features, owned) = select(preference);
            try
            {
                var scores = tasks.Select(task => TaskEvaluator.Evaluate(images => task.Logits(images, features), task.Data, batchSize, cancellationToken)).ToList();
                var point = new ParetoPoint(preference, scores.Select(s => s.Accuracy).ToArray(), scores.Select(s => s.Loss ?? double.NaN).ToArray());
                points.Add(point);
                progress?.Report(point);
            }
            finally
            {
                owned?.Dispose();
            }
        }

        return new ParetoEvaluationReport(method, tasks.Select(t => t.Name).ToArray(), points, referencePoint);
    }

    private static void CheckTasks(IReadOnlyList<ClassificationTask> tasks, int taskCount)
    {
        ClassificationTask.Check(tasks, nameof(tasks));
        if (tasks.Count != taskCount)
        {
            throw new ArgumentException($"{taskCount} tasks are merged; {tasks.Count} were given.", nameof(tasks));
        }
    }
}
