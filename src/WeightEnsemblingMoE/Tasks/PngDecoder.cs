using System.Buffers.Binary;
using System.IO.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// A small PNG decoder written to the PNG specification (ISO/IEC 15948): chunks with CRC checks, zlib-compressed
/// <c>IDAT</c> data and the five scanline filters (None, Sub, Up, Average, Paeth). It reads non-interlaced 8-bit
/// greyscale, grey+alpha, RGB and RGBA images and rejects anything else with a message naming the file and the feature.
/// </summary>
public static class PngDecoder
{
    private static readonly byte[] Signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
    private static readonly uint[] CrcTable = BuildCrcTable();

    /// <summary>Reads a PNG file.</summary>
    /// <param name="path">The file path.</param>
    /// <returns>The pixels as an unsigned-byte tensor [H, W, C] (C = 1, 2, 3 or 4), owned by the caller.</returns>
    /// <exception cref="InvalidDataException">The file cannot be read, is not a PNG, is corrupt, or uses an unsupported feature; the message names the file.</exception>
    public static Tensor Read(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"PNG file '{path}' cannot be read: {e.Message}", e);
        }
        return Decode(bytes, path);
    }

    /// <summary>Decodes PNG bytes.</summary>
    /// <param name="png">The bytes of a PNG file.</param>
    /// <param name="source">A name for the data used in error messages (e.g. the file path).</param>
    /// <returns>The pixels as an unsigned-byte tensor [H, W, C] (C = 1, 2, 3 or 4), owned by the caller.</returns>
    /// <exception cref="InvalidDataException">The bytes are not a PNG, are corrupt, or use an unsupported feature; the message names <paramref name="source"/>.</exception>
    public static Tensor Decode(byte[] png, string source = "PNG data")
    {
        ArgumentNullException.ThrowIfNull(png);
        ArgumentNullException.ThrowIfNull(source);
        if (png.Length < Signature.Length || !png.AsSpan(0, Signature.Length).SequenceEqual(Signature))
        {
            throw new InvalidDataException($"PNG '{source}' does not start with the PNG signature.");
        }
        int width = 0, height = 0, channels = 0;
        bool seenHeader = false, seenEnd = false;
        using var compressed = new MemoryStream();
        int offset = Signature.Length;
        while (offset < png.Length && !seenEnd)
        {
            if (png.Length - offset < 12)
            {
                throw new InvalidDataException($"PNG '{source}' is truncated: a chunk header at byte {offset} is incomplete.");
            }
            uint length = BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(offset));
            if (length > int.MaxValue || png.Length - offset - 12 < length)
            {
                throw new InvalidDataException($"PNG '{source}' is truncated: the chunk at byte {offset} declares {length} data bytes.");
            }
            string type = System.Text.Encoding.ASCII.GetString(png, offset + 4, 4);
            var data = png.AsSpan(offset + 8, (int)length);
            uint expectedCrc = BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(offset + 8 + (int)length));
            uint actualCrc = Crc32(png.AsSpan(offset + 4, (int)length + 4));
            if (expectedCrc != actualCrc)
            {
                throw new InvalidDataException($"PNG '{source}': chunk '{type}' at byte {offset} fails its CRC check (stored 0x{expectedCrc:X8}, computed 0x{actualCrc:X8}).");
            }
            if (!seenHeader && type != "IHDR")
            {
                throw new InvalidDataException($"PNG '{source}': the first chunk is '{type}', not 'IHDR'.");
            }
            switch (type)
            {
                case "IHDR":
                    (width, height, channels) = ReadHeader(data, source);
                    seenHeader = true;
                    break;
                case "IDAT":
                    compressed.Write(data);
                    break;
                case "IEND":
                    seenEnd = true;
                    break;
                case "PLTE":
                    break;
                default:
                    if (char.IsUpper(type[0]))
                    {
                        throw new InvalidDataException($"PNG '{source}' has unknown critical chunk '{type}'.");
                    }
                    break;
            }
            offset += 12 + (int)length;
        }
        if (!seenEnd)
        {
            throw new InvalidDataException($"PNG '{source}' is truncated: no 'IEND' chunk.");
        }
        if (compressed.Length == 0)
        {
            throw new InvalidDataException($"PNG '{source}' has no 'IDAT' data.");
        }

        int stride = checked(width * channels);
        byte[] raw = Inflate(compressed, checked((stride + 1) * height), source);
        byte[] pixels = Unfilter(raw, width, height, channels, source);
        return tensor(pixels, [height, width, channels], ScalarType.Byte);
    }

    private static (int Width, int Height, int Channels) ReadHeader(ReadOnlySpan<byte> data, string source)
    {
        if (data.Length != 13)
        {
            throw new InvalidDataException($"PNG '{source}': 'IHDR' has {data.Length} bytes, not 13.");
        }
        uint width = BinaryPrimitives.ReadUInt32BigEndian(data);
        uint height = BinaryPrimitives.ReadUInt32BigEndian(data[4..]);
        byte bitDepth = data[8], colorType = data[9], compression = data[10], filter = data[11], interlace = data[12];
        if (width == 0 || height == 0 || width > 1 << 15 || height > 1 << 15)
        {
            throw new InvalidDataException($"PNG '{source}' has unsupported size {width}×{height}; each side must be in [1, 32768].");
        }
        if (bitDepth != 8)
        {
            throw new InvalidDataException($"PNG '{source}' has bit depth {bitDepth}; only 8-bit images are supported.");
        }
        int channels = colorType switch
        {
            0 => 1,
            4 => 2,
            2 => 3,
            6 => 4,
            3 => throw new InvalidDataException($"PNG '{source}' is palette-based (colour type 3); only greyscale, grey+alpha, RGB and RGBA are supported."),
            _ => throw new InvalidDataException($"PNG '{source}' has invalid colour type {colorType}."),
        };
        if (compression != 0 || filter != 0)
        {
            throw new InvalidDataException($"PNG '{source}' has compression method {compression} and filter method {filter}; both must be 0.");
        }
        if (interlace != 0)
        {
            throw new InvalidDataException($"PNG '{source}' is interlaced (method {interlace}); only non-interlaced images are supported.");
        }
        return ((int)width, (int)height, channels);
    }

    private static byte[] Inflate(MemoryStream compressed, int expectedLength, string source)
    {
        compressed.Position = 0;
        var raw = new byte[expectedLength];
        try
        {
            using var zlib = new ZLibStream(compressed, CompressionMode.Decompress, leaveOpen: true);
            int read = 0;
            while (read < expectedLength)
            {
                int n = zlib.Read(raw, read, expectedLength - read);
                if (n == 0)
                {
                    throw new InvalidDataException($"PNG '{source}' is truncated: the image data inflates to {read} bytes, {expectedLength} are needed.");
                }
                read += n;
            }
        }
        catch (InvalidDataException e) when (!e.Message.StartsWith("PNG", StringComparison.Ordinal))
        {
            throw new InvalidDataException($"PNG '{source}' has corrupt zlib image data: {e.Message}", e);
        }
        return raw;
    }

    private static byte[] Unfilter(byte[] raw, int width, int height, int bpp, string source)
    {
        int stride = width * bpp;
        var pixels = new byte[stride * height];
        for (int y = 0; y < height; y++)
        {
            byte filter = raw[y * (stride + 1)];
            var line = raw.AsSpan((y * (stride + 1)) + 1, stride);
            var current = pixels.AsSpan(y * stride, stride);
            ReadOnlySpan<byte> previous = y > 0 ? pixels.AsSpan((y - 1) * stride, stride) : new byte[stride];
            for (int x = 0; x < stride; x++)
            {
                int a = x >= bpp ? current[x - bpp] : 0;
                int b = previous[x];
                int c = x >= bpp ? previous[x - bpp] : 0;
                int predictor = filter switch
                {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) >> 1,
                    4 => Paeth(a, b, c),
                    _ => throw new InvalidDataException($"PNG '{source}': scanline {y} has unknown filter type {filter}."),
                };
                current[x] = unchecked((byte)(line[x] + predictor));
            }
        }
        return pixels;
    }

    private static int Paeth(int a, int b, int c)
    {
        int p = a + b - c;
        int pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte value in data)
        {
            crc = CrcTable[(crc ^ value) & 0xFF] ^ (crc >> 8);
        }
        return crc ^ 0xFFFFFFFFu;
    }

    private static uint[] BuildCrcTable()
    {
        var table = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            }
            table[n] = c;
        }
        return table;
    }
}
