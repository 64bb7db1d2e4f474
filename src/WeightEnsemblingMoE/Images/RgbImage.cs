using static TorchSharp.torch;

namespace WeightEnsembling.Images;

/// <summary>
/// An 8-bit RGB image held as interleaved pixels in row-major order (<c>[H, W, 3]</c>, like a NumPy array of a Pillow
/// <c>RGB</c> image).
/// </summary>
public sealed class RgbImage
{
    /// <summary>Wraps interleaved RGB pixels (the array is kept, not copied).</summary>
    /// <param name="width">The width in pixels, at least 1.</param>
    /// <param name="height">The height in pixels, at least 1.</param>
    /// <param name="pixels">The pixels, <c>width × height × 3</c> bytes, row by row.</param>
    /// <exception cref="ArgumentException">The array length does not match the size.</exception>
    public RgbImage(int width, int height, byte[] pixels)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentNullException.ThrowIfNull(pixels);
        if (pixels.LongLength != (long)width * height * 3)
        {
            throw new ArgumentException($"An RGB image of {width}×{height} needs {(long)width * height * 3} bytes, got {pixels.LongLength}.", nameof(pixels));
        }
        Width = width;
        Height = height;
        Pixels = pixels;
    }

    /// <summary>The width in pixels.</summary>
    public int Width { get; }

    /// <summary>The height in pixels.</summary>
    public int Height { get; }

    /// <summary>The interleaved RGB pixels, row by row (<c>[H, W, 3]</c>).</summary>
    public byte[] Pixels { get; }

    /// <summary>The pixels as a new unsigned-byte tensor <c>[H, W, 3]</c> owned by the caller.</summary>
    /// <returns>The tensor.</returns>
    public Tensor ToTensor() => tensor(Pixels, [Height, Width, 3], ScalarType.Byte);
}
