using TorchSharp.Modules;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// A model that <see cref="AdaptationTrainer"/> can train: it maps images to features for the task heads, exposes the few
/// parameters that training learns (routers for WEMoE, merging coefficients for AdaMerging), and saves and loads them the
/// way the model's own <c>SavePretrained</c> / <c>LoadPretrained</c> do; everything else is frozen.
/// </summary>
public interface IAdaptableModel
{
    /// <summary>The method's name, for reports and checkpoints (e.g. <c>WEMoE</c>, <c>AdaMerging (layer-wise)</c>).</summary>
    string Method { get; }

    /// <summary>
    /// The distinct trainable parameters by stable name (a shared parameter once), in a fixed order: what the optimizer
    /// updates and what a checkpoint's optimizer state is keyed by.
    /// </summary>
    /// <returns>The named parameters; the model owns them.</returns>
    IReadOnlyList<KeyValuePair<string, Parameter>> NamedTrainableParameters();

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

    /// <summary>
    /// Writes the trainable weights with the model's configuration and the fingerprints of the frozen weights into
    /// <paramref name="folder"/> (the model's <c>SavePretrained</c>); a training checkpoint holds exactly these files.
    /// </summary>
    /// <param name="folder">The folder, created if needed.</param>
    void SavePretrained(string folder);

    /// <summary>
    /// Loads trainable weights written by <see cref="SavePretrained"/>, refusing (and naming what differs) a folder saved
    /// from another model, pool or structure; the model is unchanged on failure.
    /// </summary>
    /// <param name="folder">The saved folder.</param>
    void LoadPretrained(string folder);
}
