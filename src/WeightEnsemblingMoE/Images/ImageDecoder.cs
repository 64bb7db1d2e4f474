using SkiaSharp;

namespace WeightEnsembling.Images;

/// <summary>
/// Decodes PNG, JPEG, BMP, GIF (first frame) and WebP files to 8-bit RGB with SkiaSharp, converting modes as Pillow's
/// <c>Image.convert("RGB")</c> does: grey is replicated, alpha is dropped (not composited), palettes are expanded, CMYK
/// JPEGs are converted to RGB. 16-bit PNGs keep the high byte of each sample. That is where this decoder departs from
/// Pillow on purpose: Pillow opens a 16-bit greyscale PNG as mode <c>I</c> and its conversion to RGB clamps every value
/// above 255 to white (SkiaSharp gives no access to the 16-bit grey samples, and the high byte keeps the picture). The EXIF orientation (as SkiaSharp reports it) is applied as <c>PIL.ImageOps.exif_transpose</c> does.
/// </summary>
/// <remarks>
/// The library references the managed SkiaSharp package only; an application adds the native assets for its platform
/// (e.g. <c>SkiaSharp.NativeAssets.Linux.NoDependencies</c>), as it adds a TorchSharp backend. Instances are immutable
/// once configured and safe to share between threads.
/// </remarks>
public sealed class ImageDecoder
{
    /// <summary>Pillow's default <c>Image.MAX_IMAGE_PIXELS</c> (1024 × 1024 × 1024 / 4 / 3).</summary>
    public const long DefaultMaxPixels = 89_478_485;

    /// <summary>
    /// The largest number of pixels (width × height) an image may declare; larger images are refused before any pixel
    /// is decoded, against decompression bombs. The default value is <see cref="DefaultMaxPixels"/>.
    /// </summary>
    public long MaxPixels { get; init; } = DefaultMaxPixels;

    /// <summary>
    /// Whether the EXIF orientation tag is applied (as <c>PIL.ImageOps.exif_transpose</c>, which transformers'
    /// <c>load_image</c> and the <c>datasets</c> Image feature call). The default value is <see langword="true"/>.
    /// </summary>
    public bool ApplyExifOrientation { get; init; } = true;

    /// <summary>A decoder with the default options.</summary>
    public static ImageDecoder Default { get; } = new();

    /// <summary>Reads and decodes an image file.</summary>
    /// <param name="path">The file path.</param>
    /// <returns>The RGB image.</returns>
    /// <exception cref="InvalidDataException">The file cannot be read, is not a supported image, is corrupt or truncated, or is larger than <see cref="MaxPixels"/>; the message names the file.</exception>
    public RgbImage Decode(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"Image '{path}' cannot be read: {e.Message}", e);
        }
        return Decode(bytes, path);
    }

    /// <summary>Decodes the bytes of an image file.</summary>
    /// <param name="data">The encoded image.</param>
    /// <param name="source">A name for the data in error messages (a file path, or a row of a parquet file).</param>
    /// <returns>The RGB image.</returns>
    /// <exception cref="InvalidDataException">The data is not a supported image, is corrupt or truncated, or is larger than <see cref="MaxPixels"/>; the message names <paramref name="source"/>.</exception>
    public RgbImage Decode(ReadOnlySpan<byte> data, string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (MaxPixels < 1)
        {
            throw new InvalidOperationException($"{nameof(MaxPixels)} must be at least 1, got {MaxPixels}.");
        }
        if (data.IsEmpty)
        {
            throw new InvalidDataException($"Image '{source}' is empty.");
        }
        using var skData = SKData.CreateCopy(data);
        using var codec = SKCodec.Create(skData);
        if (codec is null)
        {
            throw new InvalidDataException($"Image '{source}' is not a PNG, JPEG, BMP, GIF or WebP image, or its header is corrupt or truncated.");
        }
        var info = codec.Info;
        long pixels = (long)info.Width * info.Height;
        if (info.Width < 1 || info.Height < 1)
        {
            throw new InvalidDataException($"Image '{source}' declares an empty size {info.Width}×{info.Height}.");
        }
        if (pixels > MaxPixels)
        {
            throw new InvalidDataException($"Image '{source}' has {info.Width}×{info.Height} = {pixels} pixels, more than the limit of {MaxPixels} ({nameof(MaxPixels)}); it could be a decompression bomb.");
        }
        int width = info.Width, height = info.Height;
        byte[] rgb = Decode8(codec, width, height, source);
        var image = new RgbImage(width, height, rgb);
        if (ApplyExifOrientation)
        {
            image = Orient(image, (int)codec.EncodedOrigin);
        }
        return image;
    }

    private static byte[] Decode8(SKCodec codec, int width, int height, string source)
    {
        var target = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var rgba = new byte[(long)width * height * 4];
        Read(codec, target, rgba, source);
        var rgb = new byte[(long)width * height * 3];
        for (long p = 0, q = 0; p < rgba.LongLength; p += 4, q += 3)
        {
            rgb[q] = rgba[p];
            rgb[q + 1] = rgba[p + 1];
            rgb[q + 2] = rgba[p + 2];
        }
        return rgb;
    }

    private static unsafe void Read(SKCodec codec, SKImageInfo target, byte[] buffer, string source)
    {
        SKCodecResult result;
        fixed (byte* pointer = buffer)
        {
            result = codec.GetPixels(target, (IntPtr)pointer);
        }
        if (result != SKCodecResult.Success)
        {
            string what = result == SKCodecResult.IncompleteInput ? "truncated" : "corrupt";
            throw new InvalidDataException($"Image '{source}' is {what}: decoding stopped with {result}.");
        }
    }

    // EXIF orientation 1–8 as PIL.ImageOps.exif_transpose maps it: 2 mirror, 3 rotate 180°, 4 flip, 5 transpose,
    // 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° anticlockwise.
    internal static RgbImage Orient(RgbImage image, int orientation)
    {
        if (orientation is < 2 or > 8)
        {
            return image;
        }
        int w = image.Width, h = image.Height;
        bool swap = orientation >= 5;
        int ow = swap ? h : w, oh = swap ? w : h;
        var source = image.Pixels;
        var output = new byte[source.LongLength];
        for (int y = 0; y < oh; y++)
        {
            for (int x = 0; x < ow; x++)
            {
                (int sx, int sy) = orientation switch
                {
                    2 => (w - 1 - x, y),
                    3 => (w - 1 - x, h - 1 - y),
                    4 => (x, h - 1 - y),
                    5 => (y, x),
                    6 => (y, h - 1 - x),
                    7 => (w - 1 - y, h - 1 - x),
                    _ => (w - 1 - y, x),
                };
                long from = (((long)sy * w) + sx) * 3, to = (((long)y * ow) + x) * 3;
                output[to] = source[from];
                output[to + 1] = source[from + 1];
                output[to + 2] = source[from + 2];
            }
        }
        return new RgbImage(ow, oh, output);
    }
}
