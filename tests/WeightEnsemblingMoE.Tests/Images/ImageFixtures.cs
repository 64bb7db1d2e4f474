using System.IO.Compression;
using System.Text.Json;

namespace WeightEnsembling.Tests.Images;

/// <summary>Reads the Pillow reference written by tools/fixtures/clip_preprocess_reference.py.</summary>
public static class ImageFixtures
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "Fixtures", "Images");

    public sealed record Case(string Config, string File, string Stem, string Mode, int Width, int Height, int[] Shape, bool Float)
    {
        public override string ToString() => $"{Config}/{File}";
    }

    public static IEnumerable<Case> Cases()
    {
        using var document = JsonDocument.Parse(System.IO.File.ReadAllText(Path.Combine(Root, "manifest.json")));
        foreach (var c in document.RootElement.GetProperty("cases").EnumerateArray())
        {
            yield return new Case(
                c.GetProperty("config").GetString()!,
                c.GetProperty("file").GetString()!,
                c.GetProperty("stem").GetString()!,
                c.GetProperty("mode").GetString()!,
                c.GetProperty("width").GetInt32(),
                c.GetProperty("height").GetInt32(),
                c.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                c.GetProperty("float").GetBoolean());
        }
    }

    public static string ImagePath(Case c) => Path.Combine(Root, "images", c.File);

    public static byte[] Gunzip(string path)
    {
        using var gzip = new GZipStream(System.IO.File.OpenRead(path), CompressionMode.Decompress);
        using var output = new MemoryStream();
        gzip.CopyTo(output);
        return output.ToArray();
    }

    public static byte[] ExpectedBytes(Case c) => Gunzip(Path.Combine(Root, c.Config, c.Stem + ".u8.bin.gz"));

    public static byte[] ExpectedHighByte(Case c) => Gunzip(Path.Combine(Root, c.Config, c.Stem + ".highbyte.u8.bin.gz"));

    public static float[] ExpectedFloats(Case c)
    {
        var bytes = Gunzip(Path.Combine(Root, c.Config, c.Stem + ".f32.bin.gz"));
        var values = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return values;
    }
}
