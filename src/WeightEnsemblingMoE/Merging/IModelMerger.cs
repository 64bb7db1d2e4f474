using WeightEnsembling.Clip;
using WeightEnsembling.Tasks;
using WeightEnsembling.Training;

namespace WeightEnsembling.Merging;

/// <summary>
/// The merging baselines with the application's options and logger, registered by <c>AddWeightEnsemblingMoE</c>. Every
/// method returns a new model the caller owns and disposes; the inputs are not modified.
/// </summary>
public interface IModelMerger
{
    /// <summary>Simple averaging, θ = (1/T) Σ_t θ_t (<see cref="ModelMerging.SimpleAverage(IReadOnlyList{ClipVisionModel})"/>).</summary>
    /// <param name="models">The fine-tuned models, at least one, of one architecture.</param>
    /// <returns>The merged model.</returns>
    ClipVisionModel SimpleAverage(IReadOnlyList<ClipVisionModel> models);

    /// <summary>Task arithmetic with the configured scaling factor (<see cref="ModelMerging.TaskArithmetic(ClipVisionModel, IReadOnlyList{ClipVisionModel}, double)"/>).</summary>
    /// <param name="pretrained">The pre-trained model θ_0.</param>
    /// <param name="finetuned">The fine-tuned models θ_t.</param>
    /// <returns>The merged model.</returns>
    ClipVisionModel TaskArithmetic(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> finetuned);

    /// <summary>TIES-merging with the configured options (<see cref="ModelMerging.Ties(ClipVisionModel, IReadOnlyList{ClipVisionModel}, TiesMergingOptions?)"/>).</summary>
    /// <param name="pretrained">The pre-trained model θ_0.</param>
    /// <param name="finetuned">The fine-tuned models θ_t.</param>
    /// <returns>The merged model.</returns>
    ClipVisionModel Ties(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> finetuned);

    /// <summary>RegMean with the configured options (<c>RegMean.Run</c>); fallbacks are logged as warnings.</summary>
    /// <param name="finetuned">The fine-tuned models, one per task.</param>
    /// <param name="datasets">Each model's task examples (labels not needed), in the same order.</param>
    /// <param name="progress">Receives a report after each batch, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Checked before each batch.</param>
    /// <returns>The merged model.</returns>
    ClipVisionModel RegMean(
        IReadOnlyList<ClipVisionModel> finetuned,
        IReadOnlyList<TaskDataset> datasets,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default);

    /// <summary>Fisher merging with the configured options (<c>FisherMerging.Run</c>).</summary>
    /// <param name="finetuned">The fine-tuned models, one per task.</param>
    /// <param name="tasks">Each model's task (its examples and head), in the same order.</param>
    /// <param name="progress">Receives a report after each batch, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Checked before each batch.</param>
    /// <returns>The merged model.</returns>
    ClipVisionModel Fisher(
        IReadOnlyList<ClipVisionModel> finetuned,
        IReadOnlyList<ClassificationTask> tasks,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default);

    /// <summary>
    /// An AdaMerging model with the configured options (<c>AdaMergingModel.Create</c>), whose coefficients an
    /// <see cref="ITestTimeAdapter"/> then trains.
    /// </summary>
    /// <param name="pretrained">The pre-trained model θ_0.</param>
    /// <param name="finetuned">The fine-tuned models θ_t.</param>
    /// <returns>The adaptable model; the caller owns and disposes it.</returns>
    AdaMergingModel CreateAdaMerging(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> finetuned);
}
