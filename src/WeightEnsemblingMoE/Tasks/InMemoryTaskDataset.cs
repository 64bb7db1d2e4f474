using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// A <see cref="TaskDataset"/> held in memory as one image tensor and an optional label tensor, with an optional
/// <see cref="ImageTransform"/> applied to each batch as it is drawn.
/// </summary>
public sealed class InMemoryTaskDataset : TaskDataset
{
    private readonly Tensor _images;
    private readonly Tensor? _labels;

    /// <summary>
    /// Creates the dataset. It keeps its own handles to the given tensors' storage: the caller keeps ownership of
    /// <paramref name="images"/> and <paramref name="labels"/> and may dispose them.
    /// </summary>
    /// <param name="name">The task name.</param>
    /// <param name="images">The images, shape [N, C, H, W], float32, finite.</param>
    /// <param name="labels">The labels, shape [N], int64 in [0, <paramref name="classCount"/>); <see langword="null"/> for unlabelled data.</param>
    /// <param name="classCount">The number of classes.</param>
    /// <param name="transform">The transform applied to each batch of images; <see langword="null"/> for none.</param>
    /// <exception cref="ArgumentException">A tensor has the wrong rank, dtype, length or values; the message names it.</exception>
    public InMemoryTaskDataset(string name, Tensor images, Tensor? labels, int classCount, ImageTransform? transform = null)
        : base(name, classCount)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4)
        {
            throw new ArgumentException($"Dataset '{name}': images must have shape [N, C, H, W], got rank {images.dim()} ({ShapeText(images)}).", nameof(images));
        }
        if (images.dtype != ScalarType.Float32)
        {
            throw new ArgumentException($"Dataset '{name}': images must be float32, got {images.dtype}.", nameof(images));
        }
        using (var scope = NewDisposeScope())
        {
            if (!images.isfinite().all().item<bool>())
            {
                throw new ArgumentException($"Dataset '{name}': images contain NaN or infinite values.", nameof(images));
            }
            if (labels is not null)
            {
                if (labels.dim() != 1 || labels.shape[0] != images.shape[0])
                {
                    throw new ArgumentException($"Dataset '{name}': labels must have shape [{images.shape[0]}] to match the images, got {ShapeText(labels)}.", nameof(labels));
                }
                if (labels.dtype != ScalarType.Int64)
                {
                    throw new ArgumentException($"Dataset '{name}': labels must be int64, got {labels.dtype}.", nameof(labels));
                }
                if (labels.numel() > 0)
                {
                    long min = labels.min().item<long>();
                    long max = labels.max().item<long>();
                    if (min < 0 || max >= classCount)
                    {
                        throw new ArgumentException($"Dataset '{name}': labels must lie in [0, {classCount}), found values in [{min}, {max}].", nameof(labels));
                    }
                }
            }
        }
        _images = images.alias().DetachFromDisposeScope();
        _labels = labels?.alias().DetachFromDisposeScope();
        Transform = transform;
    }

    /// <inheritdoc />
    public override long Count => _images.shape[0];

    /// <inheritdoc />
    public override bool HasLabels => _labels is not null;

    /// <summary>The transform applied to each batch of images, or <see langword="null"/>.</summary>
    public ImageTransform? Transform { get; }

    /// <inheritdoc />
    protected override TaskBatch LoadExamples(long[] indices)
    {
        var index = tensor(indices, ScalarType.Int64, device: _images.device);
        var images = _images.index_select(0, index);
        if (Transform is not null)
        {
            images = Transform.Apply(images);
        }
        return new TaskBatch(images, _labels?.index_select(0, index));
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _images.Dispose();
            _labels?.Dispose();
        }
        base.Dispose(disposing);
    }

    private static string ShapeText(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
}
