using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.Tests.Zoo;

[TestFixture, NonParallelizable]
public sealed class PngDecoderTests
{
    [Test]
    public void Decode_GreyImageWithEveryFilter_ReturnsPixels()
    {
        // 5 rows × 4 pixels, grey, each row stored with another filter (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth).
        byte[,] pixels = { { 0, 10, 20, 30 }, { 5, 5, 200, 255 }, { 9, 8, 7, 6 }, { 100, 50, 25, 12 }, { 1, 2, 3, 4 } };
        byte[] png = Encode(pixels, filters: [0, 1, 2, 3, 4]);
        using var decoded = PngDecoder.Decode(png, "test");
        Assert.That(decoded.shape, Is.EqualTo(new long[] { 5, 4, 1 }));
        var values = decoded.data<byte>().ToArray();
        for (int y = 0; y < 5; y++)
        {
            for (int x = 0; x < 4; x++)
            {
                Assert.That(values[(y * 4) + x], Is.EqualTo(pixels[y, x]), $"pixel ({x}, {y})");
            }
        }
    }

    [Test]
    public void Decode_CorruptCrc_ThrowsNamingSource()
    {
        byte[] png = Encode(new byte[,] { { 1, 2 } }, filters: [0]);
        png[^20] ^= 0xFF; // inside the IDAT chunk
        Assert.That(() => PngDecoder.Decode(png, "broken.png"), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("broken.png"));
    }

    [Test]
    public void Decode_NotPng_Throws()
    {
        Assert.That(() => PngDecoder.Decode(Encoding.ASCII.GetBytes("GIF89a....."), "x.gif"), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("signature"));
    }

    // A minimal PNG encoder written from the specification, applying the given filter to each row.
    private static byte[] Encode(byte[,] pixels, int[] filters)
    {
        int height = pixels.GetLength(0), width = pixels.GetLength(1);
        var raw = new MemoryStream();
        for (int y = 0; y < height; y++)
        {
            raw.WriteByte((byte)filters[y]);
            for (int x = 0; x < width; x++)
            {
                int a = x > 0 ? pixels[y, x - 1] : 0, b = y > 0 ? pixels[y - 1, x] : 0, c = x > 0 && y > 0 ? pixels[y - 1, x - 1] : 0;
                int predictor = filters[y] switch
                {
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => Paeth(a, b, c),
                    _ => 0,
                };
                raw.WriteByte((byte)(pixels[y, x] - predictor));
            }
        }

        var compressed = new MemoryStream();
        using (var zlib = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true))
        {
            raw.Position = 0;
            raw.CopyTo(zlib);
        }

        var header = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(header, width);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), height);
        header[8] = 8; // bit depth
        header[9] = 0; // greyscale
        var png = new MemoryStream();
        png.Write([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
        Chunk(png, "IHDR", header);
        Chunk(png, "IDAT", compressed.ToArray());
        Chunk(png, "IEND", []);
        return png.ToArray();
    }

    private static uint Crc32(byte[] bytes)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
            {
                crc = (crc & 1) != 0 ? 0xEDB88320 ^ (crc >> 1) : crc >> 1;
            }
        }

        return ~crc;
    }

    private static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }

    private static void Chunk(Stream png, string type, byte[] data)
    {
        var length = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(length, data.Length);
        png.Write(length);
        byte[] typeAndData = [.. Encoding.ASCII.GetBytes(type), .. data];
        png.Write(typeAndData);
        var crc = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(typeAndData));
        png.Write(crc);
    }
}
