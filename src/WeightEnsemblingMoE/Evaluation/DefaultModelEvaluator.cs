using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using WeightEnsembling.Clip;
using WeightEnsembling.DependencyInjection;
using WeightEnsembling.Diagnostics;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.Evaluation;

/// <summary>The registered <see cref="IModelEvaluator"/>: <see cref="ModelEvaluator"/> with the configured batch size.</summary>
internal sealed class DefaultModelEvaluator(IOptions<WeightEnsemblingMoEOptions> options, ILogger<IModelEvaluator>? logger = null) : IModelEvaluator
{
    private ILogger Logger { get; } = logger ?? (ILogger)Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    public EvaluationReport Evaluate(
        string method, ClipVisionModel model, IReadOnlyList<ClassificationTask> tasks, IProgress<TaskScore>? progress = null, CancellationToken cancellationToken = default) =>
        Logged(() => ModelEvaluator.Evaluate(method, model, tasks, options.Value.EvaluationBatchSize, progress, cancellationToken));

    public EvaluationReport Evaluate(
        string method, UpscaledModel model, IReadOnlyList<ClassificationTask> tasks, IProgress<TaskScore>? progress = null, CancellationToken cancellationToken = default) =>
        Logged(() => ModelEvaluator.Evaluate(method, model, tasks, options.Value.EvaluationBatchSize, progress, cancellationToken));

    public EvaluationReport Evaluate(
        string? method, IAdaptableModel model, IReadOnlyList<ClassificationTask> tasks, IProgress<TaskScore>? progress = null, CancellationToken cancellationToken = default) =>
        Logged(() => ModelEvaluator.Evaluate(method, model, tasks, options.Value.EvaluationBatchSize, progress, cancellationToken));

    private EvaluationReport Logged(Func<EvaluationReport> evaluate)
    {
        var stopwatch = Stopwatch.StartNew();
        var report = evaluate();
        Log.EvaluationCompleted(Logger, report.Method, report.Scores.Count, report.AverageAccuracy, stopwatch.Elapsed.TotalMilliseconds);
        return report;
    }
}
