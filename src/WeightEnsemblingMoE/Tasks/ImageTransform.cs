using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// Per-batch image preprocessing, applied in this order: channel replication (1 → 3), bilinear resize to a square
/// <see cref="Size"/> (<c>torch.nn.functional.interpolate</c>, <c>align_corners=False</c>), then per-channel
/// normalisation (x − mean) / std.
/// </summary>
public sealed class ImageTransform
{
    /// <summary>The per-channel mean of OpenAI's CLIP preprocessing.</summary>
    public static readonly IReadOnlyList<float> ClipMean = [0.48145466f, 0.4578275f, 0.40821073f];

    /// <summary>The per-channel standard deviation of OpenAI's CLIP preprocessing.</summary>
    public static readonly IReadOnlyList<float> ClipStd = [0.26862954f, 0.26130258f, 0.27577711f];

    /// <summary>Whether single-channel images are replicated to three channels. The default value is <see langword="false"/>.</summary>
    public bool ReplicateToRgb { get; set; }

    /// <summary>The side of the square output images in pixels, or <see langword="null"/> to keep the size. The default value is <see langword="null"/>.</summary>
    public int? Size { get; set; }

    /// <summary>The per-channel mean subtracted, or <see langword="null"/> for no normalisation. The default value is <see langword="null"/>.</summary>
    public IReadOnlyList<float>? Mean { get; set; }

    /// <summary>The per-channel standard deviation divided by (positive), set together with <see cref="Mean"/>. The default value is <see langword="null"/>.</summary>
    public IReadOnlyList<float>? Std { get; set; }

    /// <summary>The preprocessing of a CLIP vision model: replicate to RGB, resize to <paramref name="imageSize"/>, CLIP's mean and std.</summary>
    /// <param name="imageSize">The model's image size (224 for ViT-B/32).</param>
    /// <returns>The transform.</returns>
    public static ImageTransform ForClip(int imageSize = 224)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(imageSize, 1);
        return new ImageTransform { ReplicateToRgb = true, Size = imageSize, Mean = ClipMean, Std = ClipStd };
    }

    /// <summary>Applies the transform to a batch of images.</summary>
    /// <param name="images">The images, shape [B, C, H, W], float32; not modified.</param>
    /// <returns>A new tensor, shape [B, C', S, S].</returns>
    /// <exception cref="ArgumentException">The images have the wrong rank, or the options do not fit their channel count; the message names the option.</exception>
    public Tensor Apply(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4)
        {
            throw new ArgumentException($"images must have shape [B, C, H, W], got rank {images.dim()}.", nameof(images));
        }
        Validate();
        using var scope = NewDisposeScope();
        var result = images.alias();
        if (ReplicateToRgb && result.shape[1] == 1)
        {
            result = result.expand(-1, 3, -1, -1);
        }
        if (Size is int size && (result.shape[2] != size || result.shape[3] != size))
        {
            result = nn.functional.interpolate(result, size: [size, size], mode: InterpolationMode.Bilinear, align_corners: false);
        }
        if (Mean is not null && Std is not null)
        {
            long channels = result.shape[1];
            if (Mean.Count != channels)
            {
                throw new ArgumentException($"{nameof(Mean)} has {Mean.Count} values but the images have {channels} channels.", nameof(images));
            }
            var mean = tensor(Mean.ToArray()).reshape(1, channels, 1, 1);
            var std = tensor(Std.ToArray()).reshape(1, channels, 1, 1);
            result = (result - mean) / std;
        }
        else
        {
            result = result.contiguous().clone();
        }
        return result.MoveToOuterDisposeScope();
    }

    private void Validate()
    {
        if (Size is int size && size < 1)
        {
            throw new ArgumentException($"{nameof(Size)} must be at least 1, got {size}.");
        }
        if ((Mean is null) != (Std is null))
        {
            throw new ArgumentException($"{nameof(Mean)} and {nameof(Std)} must be set together.");
        }
        if (Mean is not null && Std is not null)
        {
            if (Mean.Count != Std.Count)
            {
                throw new ArgumentException($"{nameof(Mean)} has {Mean.Count} values but {nameof(Std)} has {Std.Count}.");
            }
            for (int i = 0; i < Std.Count; i++)
            {
                if (!(Std[i] > 0) || float.IsInfinity(Std[i]) || !float.IsFinite(Mean[i]))
                {
                    throw new ArgumentException($"{nameof(Std)}[{i}] must be positive and finite and {nameof(Mean)}[{i}] finite; got {Std[i]} and {Mean[i]}.");
                }
            }
        }
    }
}
