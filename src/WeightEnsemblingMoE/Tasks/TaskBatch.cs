using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// One batch drawn from a <see cref="TaskDataset"/>: images and, for labelled data, their labels. The batch owns its
/// tensors (they are detached from any dispose scope); dispose the batch, or move the tensors into a scope, when done.
/// </summary>
public sealed class TaskBatch : IDisposable
{
    /// <summary>Creates a batch that takes ownership of <paramref name="images"/> and <paramref name="labels"/>.</summary>
    /// <param name="images">The images, shape [B, C, H, W], float32.</param>
    /// <param name="labels">The labels, shape [B], int64; <see langword="null"/> for unlabelled data.</param>
    public TaskBatch(Tensor images, Tensor? labels)
    {
        ArgumentNullException.ThrowIfNull(images);
        Images = images;
        Labels = labels;
    }

    /// <summary>The images, shape [B, C, H, W], float32.</summary>
    public Tensor Images { get; }

    /// <summary>The labels, shape [B], int64; <see langword="null"/> for unlabelled data.</summary>
    public Tensor? Labels { get; }

    /// <summary>The number of examples in the batch.</summary>
    public long Count => Images.shape[0];

    /// <summary>Deconstructs the batch into its images and labels (the batch still owns them).</summary>
    /// <param name="images">The images.</param>
    /// <param name="labels">The labels, or <see langword="null"/>.</param>
    public void Deconstruct(out Tensor images, out Tensor? labels)
    {
        images = Images;
        labels = Labels;
    }

    /// <summary>Disposes the images and labels.</summary>
    public void Dispose()
    {
        Images.Dispose();
        Labels?.Dispose();
    }
}
