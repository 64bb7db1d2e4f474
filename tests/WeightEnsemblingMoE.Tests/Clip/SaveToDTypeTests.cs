using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Tests.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Clip;

/// <summary>
/// <c>SaveTo(folder, dtype)</c>: the safetensors header read with a plain JSON parser (dtype strings <c>F16</c>/<c>BF16</c>,
/// data offsets), the bytes compared with .NET's own <see cref="Half"/> conversion and a bit-level bfloat16 round to
/// nearest even, the file sizes, and the model read back.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class SaveToDTypeTests
{
    private string root = null!;

    [SetUp]
    public void SetUp() => root = Path.Combine(Path.GetTempPath(), "wemoe-saveto-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(root))
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static (JsonObject Header, long HeaderBytes, byte[] File) Read(string folder)
    {
        var bytes = File.ReadAllBytes(Path.Combine(folder, "model.safetensors"));
        long length = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, checked((int)length)))!.AsObject();
        return (header, 8 + length, bytes);
    }

    private static ushort BFloat16Bits(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }

    [TestCase(ScalarType.Float16, "F16", "float16")]
    [TestCase(ScalarType.BFloat16, "BF16", "bfloat16")]
    public void SaveTo_HalfDType_WritesDTypeStrings_RoundedBytes_HalfTheData(ScalarType dtype, string safetensorsName, string torchName)
    {
        using var model = TinyClip.Pretrained();
        string full = Path.Combine(root, "f32"), half = Path.Combine(root, safetensorsName);
        model.SaveTo(full);
        model.SaveTo(half, dtype);

        var (fullHeader, fullHeaderBytes, fullFile) = Read(full);
        var (header, headerBytes, file) = Read(half);
        var entries = header.Where(p => p.Key != "__metadata__").ToList();
        Assert.That(entries, Is.Not.Empty);
        Assert.That(entries.All(p => p.Value!["dtype"]!.GetValue<string>() == safetensorsName), Is.True, "every tensor is floating, so every dtype is " + safetensorsName);
        Assert.That(fullHeader.Where(p => p.Key != "__metadata__").All(p => p.Value!["dtype"]!.GetValue<string>() == "F32"), Is.True);
        long data = file.Length - headerBytes, fullData = fullFile.Length - fullHeaderBytes;
        Assert.That(data * 2, Is.EqualTo(fullData), "the data section halves");
        Assert.That(new FileInfo(Path.Combine(half, "model.safetensors")).Length, Is.LessThan(new FileInfo(Path.Combine(full, "model.safetensors")).Length * 0.6));

        var state = model.state_dict();
        foreach (var (name, entry) in entries)
        {
            var offsets = entry!["data_offsets"]!.AsArray().Select(o => o!.GetValue<long>()).ToArray();
            var stored = MemoryMarshal.Cast<byte, ushort>(file.AsSpan(checked((int)(headerBytes + offsets[0])), checked((int)(offsets[1] - offsets[0]))));
            using var values = state[name].contiguous().cpu();
            var floats = MemoryMarshal.Cast<byte, float>(values.bytes);
            Assert.That(stored.Length, Is.EqualTo(floats.Length), name);
            for (int i = 0; i < floats.Length; i++)
            {
                ushort expected = dtype == ScalarType.Float16 ? BitConverter.HalfToUInt16Bits((Half)floats[i]) : BFloat16Bits(floats[i]);
                if (stored[i] != expected)
                {
                    Assert.Fail($"'{name}'[{i}] = {floats[i]}: stored 0x{stored[i]:X4}, expected 0x{expected:X4}.");
                }
            }
        }

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(half, "config.json")))!;
        Assert.That(config["torch_dtype"]!.GetValue<string>(), Is.EqualTo(torchName));
        Assert.That(model.parameters().All(p => p.dtype == ScalarType.Float32), Is.True, "the model itself is not converted");

        using var loaded = ClipVisionModel.FromPretrained(half);
        var back = loaded.state_dict();
        foreach (var (name, tensor) in state)
        {
            using var rounded = tensor.to(dtype).to(ScalarType.Float32);
            Assert.That(TinyClip.BitEqual(back[name], rounded), Is.True, name);
        }
    }

    [Test]
    public void SaveTo_Float32DType_SameBytesAsSaveTo()
    {
        using var model = TinyClip.Pretrained();
        model.SaveTo(Path.Combine(root, "a"));
        model.SaveTo(Path.Combine(root, "b"), ScalarType.Float32);
        Assert.That(File.ReadAllBytes(Path.Combine(root, "b", "model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(root, "a", "model.safetensors"))));
    }

    [TestCase(ScalarType.Int32)]
    [TestCase(ScalarType.Float64)]
    public void SaveTo_UnsupportedDType_ThrowsNamingIt_WritesNothing(ScalarType dtype)
    {
        using var model = TinyClip.Pretrained();
        string folder = Path.Combine(root, "x");
        var e = Assert.Throws<ArgumentException>(() => model.SaveTo(folder, dtype));
        Assert.That(e!.ParamName, Is.EqualTo("dtype"));
        Assert.That(e.Message, Does.Contain(dtype.ToString()));
        Assert.That(Directory.Exists(folder), Is.False);
    }

    [Test]
    public void SaveTo_Float16Overflow_RefusedNamingTensor_BFloat16Fine()
    {
        using var model = TinyClip.Pretrained();
        string name = model.state_dict().Keys.First(k => k.EndsWith("weight", StringComparison.Ordinal));
        using (no_grad())
        {
            model.state_dict()[name].view(-1)[0].fill_(1e5f);
        }

        string folder = Path.Combine(root, "f16");
        var e = Assert.Throws<InvalidOperationException>(() => model.SaveTo(folder, ScalarType.Float16));
        Assert.That(e!.Message, Does.Contain(name).And.Contain("Float16"));
        Assert.That(Directory.Exists(folder) && Directory.EnumerateFileSystemEntries(folder).Any(), Is.False);
        Assert.DoesNotThrow(() => model.SaveTo(Path.Combine(root, "bf16"), ScalarType.BFloat16));
    }

    [Test]
    public void ClipModelAndTextModel_SaveToFloat16_WriteF16()
    {
        var config = new ClipConfig
        {
            VisionConfig = TinyClip.Config,
            TextConfig = new ClipTextConfig { HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 1, NumAttentionHeads = 2, VocabSize = 50, MaxPositionEmbeddings = 8, ProjectionDim = 8, BosTokenId = 48, EosTokenId = 49, PadTokenId = 1 },
            ProjectionDim = 8,
        };
        using var clip = new ClipModel(config);
        string folder = Path.Combine(root, "clip");
        clip.SaveTo(folder, ScalarType.Float16);
        var (header, _, _) = Read(folder);
        var floating = header.Where(p => p.Key != "__metadata__" && p.Value!["dtype"]!.GetValue<string>() is not ("I64" or "I32")).ToList();
        Assert.That(floating, Is.Not.Empty);
        Assert.That(floating.All(p => p.Value!["dtype"]!.GetValue<string>() == "F16"), Is.True);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!;
        Assert.That(json["torch_dtype"]!.GetValue<string>(), Is.EqualTo("float16"));
        Assert.That(json["vision_config"]?["torch_dtype"]?.GetValue<string>() ?? "float16", Is.EqualTo("float16"));
        using var back = ClipModel.FromPretrained(folder);
    }
}
