using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using WeightEnsembling.Clip;
using WeightEnsembling.DependencyInjection;
using WeightEnsembling.Tasks;
using WeightEnsembling.Training;

namespace WeightEnsembling.Merging;

/// <summary>The registered <see cref="IModelMerger"/>: the static merges with the configured options.</summary>
internal sealed class DefaultModelMerger(IOptions<WeightEnsemblingMoEOptions> options, ILogger<IModelMerger>? logger = null) : IModelMerger
{
    private ILogger Logger { get; } = logger ?? (ILogger)Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    public ClipVisionModel SimpleAverage(IReadOnlyList<ClipVisionModel> models) => ModelMerging.SimpleAverage(models);

    public ClipVisionModel TaskArithmetic(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> finetuned) =>
        ModelMerging.TaskArithmetic(pretrained, finetuned, options.Value.TaskArithmeticScalingFactor);

    public ClipVisionModel Ties(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> finetuned) =>
        ModelMerging.Ties(pretrained, finetuned, options.Value.Ties);

    public ClipVisionModel RegMean(
        IReadOnlyList<ClipVisionModel> finetuned,
        IReadOnlyList<TaskDataset> datasets,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default) =>
        Merging.RegMean.Run(finetuned, datasets, options.Value.RegMean, progress, cancellationToken, Logger);

    public ClipVisionModel Fisher(
        IReadOnlyList<ClipVisionModel> finetuned,
        IReadOnlyList<ClassificationTask> tasks,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ClassificationTask.Check(tasks, nameof(tasks));
        return FisherMerging.Run(finetuned, [.. tasks.Select(t => t.Head)], [.. tasks.Select(t => t.Data)], options.Value.Fisher, progress, cancellationToken, Logger);
    }

    public AdaMergingModel CreateAdaMerging(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> finetuned) =>
        AdaMergingModel.Create(pretrained, finetuned, options.Value.AdaMerging);
}
