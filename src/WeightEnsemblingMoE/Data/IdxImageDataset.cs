using TorchSharp;
using WeightEnsembling.Images;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Data;

/// <summary>
/// An MNIST-style IDX split kept as its unsigned bytes (one byte per pixel, not a float32 tensor) and preprocessed per
/// batch like any image: each grey image is replicated to RGB (Pillow's <c>convert("RGB")</c>) and passed through the
/// <see cref="ClipImageProcessor"/>.
/// </summary>
public sealed class IdxImageDataset : StreamingImageDataset
{
    private readonly byte[] _pixels;
    private readonly long[]? _labels;
    private readonly int _height;
    private readonly int _width;

    private IdxImageDataset(string name, int classCount, byte[] pixels, long count, int height, int width, long[]? labels, ClipImageProcessor processor, DataLoaderOptions? options)
        : base(name, classCount, processor, options)
    {
        _pixels = pixels;
        _labels = labels;
        _height = height;
        _width = width;
        Count = count;
    }

    /// <inheritdoc />
    public override long Count { get; }

    /// <inheritdoc />
    public override bool HasLabels => _labels is not null;

    /// <summary>Reads unsigned-byte IDX images <c>[N, H, W]</c> and, optionally, unsigned-byte labels <c>[N]</c> (raw or gzip).</summary>
    /// <param name="name">The task name.</param>
    /// <param name="imagesPath">The IDX file of the images.</param>
    /// <param name="labelsPath">The IDX file of the labels, or <see langword="null"/> for an unlabelled split.</param>
    /// <param name="classCount">The number of classes (10 for MNIST).</param>
    /// <param name="processor">The preprocessing.</param>
    /// <param name="options">The loader options, or <see langword="null"/> for the defaults.</param>
    /// <returns>The dataset.</returns>
    /// <exception cref="InvalidDataException">A file is invalid, holds the wrong type or rank, the files disagree on the count, or a label is out of range; the message names the file.</exception>
    public static IdxImageDataset Open(string name, string imagesPath, string? labelsPath, int classCount, ClipImageProcessor processor, DataLoaderOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        ArgumentNullException.ThrowIfNull(processor);
        using var scope = NewDisposeScope();
        var images = IdxReader.Read(imagesPath);
        if (images.dtype != ScalarType.Byte || images.dim() != 3 || images.shape[1] < 1 || images.shape[2] < 1)
        {
            throw new InvalidDataException($"IDX file '{imagesPath}' must hold unsigned-byte images [N, H, W], got {images.dtype} of shape [{string.Join(", ", images.shape)}].");
        }
        long count = images.shape[0];
        byte[] pixels = count == 0 ? [] : images.data<byte>().ToArray();
        long[]? labels = null;
        if (labelsPath is not null)
        {
            var raw = IdxReader.Read(labelsPath);
            if (raw.dtype != ScalarType.Byte || raw.dim() != 1 || raw.shape[0] != count)
            {
                throw new InvalidDataException($"IDX file '{labelsPath}' must hold {count} unsigned-byte labels [N] to match '{imagesPath}', got {raw.dtype} of shape [{string.Join(", ", raw.shape)}].");
            }
            labels = count == 0 ? [] : raw.data<byte>().ToArray().Select(b => (long)b).ToArray();
            for (int i = 0; i < labels.Length; i++)
            {
                if (labels[i] >= classCount)
                {
                    throw new InvalidDataException($"IDX file '{labelsPath}': label {i} is {labels[i]}, outside [0, {classCount}).");
                }
            }
        }
        return new IdxImageDataset(name, classCount, pixels, count, (int)images.shape[1], (int)images.shape[2], labels, processor, options);
    }

    /// <inheritdoc />
    protected override RgbImage ReadImage(long index)
    {
        long plane = (long)_height * _width;
        var rgb = new byte[plane * 3];
        long offset = index * plane;
        for (long p = 0; p < plane; p++)
        {
            byte v = _pixels[offset + p];
            rgb[p * 3] = v;
            rgb[(p * 3) + 1] = v;
            rgb[(p * 3) + 2] = v;
        }
        return new RgbImage(_width, _height, rgb);
    }

    /// <inheritdoc />
    protected override long LabelOf(long index) => _labels![index];
}
