using TorchSharp.Modules;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// A model that test-time adaptation can train: it maps images to features for the task heads and exposes the few
/// parameters that adaptation learns (routers for WEMoE, merging coefficients for AdaMerging); everything else is frozen.
/// </summary>
public interface IAdaptableModel
{
    /// <summary>The method's name, for reports and checkpoint metadata (e.g. <c>WEMoE</c>, <c>AdaMerging (layer-wise)</c>).</summary>
    string Method { get; }

    /// <summary>
    /// The distinct trainable parameters by stable name (a shared parameter once), in a fixed order: what the optimizer
    /// updates and what a checkpoint holds.
    /// </summary>
    /// <returns>The named parameters; the model owns them.</returns>
    IReadOnlyList<KeyValuePair<string, Parameter>> NamedTrainableParameters();

    /// <summary>
    /// A fingerprint of the frozen weights the trainable parameters act on (pre-trained weights, task vectors, the
    /// structure), so that a checkpoint is only loaded onto the model it was trained for.
    /// </summary>
    /// <returns>A lowercase hexadecimal digest.</returns>
    string Fingerprint();

    /// <summary>
    /// Switches between training (e.g. one batch-mean routing per batch) and evaluation (per-sample routing, so results
    /// do not depend on batching).
    /// </summary>
    /// <param name="training">Whether the model is about to be trained.</param>
    void SetTraining(bool training);

    /// <summary>The image features the task heads read (projected embeddings when the model has a projection).</summary>
    /// <param name="pixelValues">Images, shape [B, C, H, W]; not disposed.</param>
    /// <returns>The features [B, D], differentiable with respect to the trainable parameters.</returns>
    Tensor Features(Tensor pixelValues);
}
