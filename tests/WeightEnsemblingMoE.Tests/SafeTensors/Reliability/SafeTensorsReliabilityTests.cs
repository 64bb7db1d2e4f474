using System.Text;
using TorchSharp;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors.Reliability;

/// <summary>Issue 18's minimal reproducers for the safetensors reader; each failed before its fix.</summary>
[TestFixture, NonParallelizable]
public sealed class SafeTensorsReliabilityTests
{
    private TempFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new TempFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    internal static byte[] FileBytes(string header, int dataBytes)
    {
        var text = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + text.Length + dataBytes];
        BitConverter.GetBytes((ulong)text.Length).CopyTo(bytes, 0);
        text.CopyTo(bytes, 8);
        return bytes;
    }

    private string Craft(string header, int dataBytes, string name = "x.safetensors")
    {
        var path = _folder.File(name);
        File.WriteAllBytes(path, FileBytes(header, dataBytes));
        return path;
    }

    private static SafeTensorsFormatException Refused(string path, string rule, SafeTensorsReadOptions? options = null)
    {
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(path, options ?? SafeTensorsReadOptions.Default).Dispose())!;
        Assert.That(ex.FilePath, Is.EqualTo(path));
        Assert.That(ex.Message, Does.Contain(path).And.Contain(rule));
        return ex;
    }

    // 1. Lone surrogate escapes: were InvalidOperationException ("Cannot read incomplete UTF-16 JSON text").
    [TestCase("{\"a\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TestName = "LoneSurrogate_InTensorName")]
    [TestCase("{\"__metadata__\":{\"k\":\"\\udc00\"}}", 0, TestName = "LoneSurrogate_InMetadataValue")]
    [TestCase("{\"__metadata__\":{\"\\udc00\":\"v\"}}", 0, TestName = "LoneSurrogate_InMetadataKey")]
    [TestCase("{\"a\":{\"dtype\":\"F3\\ud8002\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TestName = "LoneSurrogate_InDType")]
    [TestCase("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":[\"\\ud800x\"]}}", 4, TestName = "LoneSurrogate_InIgnoredField")]
    [TestCase("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"\\udfff\":1}}", 4, TestName = "LoneSurrogate_InFieldName")]
    public void Open_LoneSurrogateEscape_IsFormatException(string header, int data) =>
        Refused(Craft(header, data), "surrogate");

    [Test]
    public void Open_SurrogatePairEscape_IsAccepted()
    {
        using var file = SafeTensorsFile.Open(Craft("{\"a\\ud83d\\ude00\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
        Assert.That(file.Names, Is.EqualTo(new[] { "a\U0001F600" }));
    }

    [Test]
    public void OpenIndex_LoneSurrogateInWeightMap_IsFormatException()
    {
        Craft("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "s.safetensors");
        var index = _folder.File("model.safetensors.index.json");
        File.WriteAllText(index, "{\"weight_map\":{\"a\\ud800\":\"s.safetensors\"}}");
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(index).Dispose())!;
        Assert.That(ex.FilePath, Is.EqualTo(index));
        Assert.That(ex.Message, Does.Contain("surrogate"));
    }

    // 2. Zero-element tensor whose strides overflow: opened, then Load threw libtorch's ExternalException.
    [Test]
    public void Open_EmptyTensorLibtorchCannotRepresent_IsRefusedAtOpen_StricterThanReferenceOnPurpose()
    {
        var path = Craft("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387904,4],\"data_offsets\":[0,0]}}", 0);
        var ex = Refused(path, "libtorch cannot represent shape [0, 4611686018427387904, 4]");
        Assert.That(ex.TensorName, Is.EqualTo("a"));
        Refused(Craft("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,18446744073709551615],\"data_offsets\":[0,0]}}", 0), "libtorch cannot represent");
    }

    [Test]
    public void Load_EmptyTensorWithHugeLeadingDims_LoadsWithItsShape()
    {
        // Strides here stay within 2^63 − 1 (the product of the dimensions after the first, zero counted as one).
        using var file = SafeTensorsFile.Open(Craft("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387904,1],\"data_offsets\":[0,0]},"
            + "\"b\":{\"dtype\":\"I8\",\"shape\":[9223372036854775807,2,0],\"data_offsets\":[0,0]}}", 0));
        using var a = file.Load("a");
        using var b = file.Load("b");
        Assert.That(a.shape, Is.EqualTo(new[] { 0L, 4611686018427387904L, 1L }));
        Assert.That(b.shape, Is.EqualTo(new[] { 9223372036854775807L, 2L, 0L }));
    }

    // 3. A field repeated inside one entry was accepted (last wins); the reference says "duplicate field".
    [TestCase("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "'dtype' more than once", TestName = "DuplicateField_DType")]
    [TestCase("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"shape\":[1],\"data_offsets\":[0,4]}}", "'shape' more than once", TestName = "DuplicateField_Shape")]
    [TestCase("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"data_offsets\":[0,4]}}", "'data_offsets' more than once", TestName = "DuplicateField_Offsets")]
    [TestCase("{\"__metadata__\":{},\"__metadata__\":{}}", "'__metadata__' more than once", TestName = "DuplicateField_Metadata")]
    public void Open_DuplicateField_IsRefused(string header, string rule) => Refused(Craft(header, 4), rule);

    // Found by the fuzzer (seed 20261126, case 44053): a name repeated after an entry whose values the reference never
    // validates (it keeps the last entry) was reported as that entry's fault, an unlisted stricter rule; now the
    // repeated name is reported.
    [TestCase("{\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,9223372036854775808]},\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}", TestName = "RepeatedName_AfterOffsetPastInt64")]
    [TestCase("{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,0]},\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}", TestName = "RepeatedName_AfterOverflowingShape")]
    [TestCase("{\"a\":{\"dtype\":\"F64\",\"shape\":[0,18446744073709551615],\"data_offsets\":[0,0]},\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}", TestName = "RepeatedName_AfterUnrepresentableShape")]
    public void Open_RepeatedName_IsReportedAsSuch(string header) => Refused(Craft(header, 8), "appears more than once in the header");

    // 4. Limits, each named in its error.
    [Test]
    public void Open_RankOverLimit_IsRefused()
    {
        var ones = string.Join(",", Enumerable.Repeat("1", 33));
        Refused(Craft($"{{\"a\":{{\"dtype\":\"U8\",\"shape\":[{ones}],\"data_offsets\":[0,1]}}}}", 1), "more than 32 dimensions, the limit (SafeTensorsReadOptions.MaxRank)");
        var ok = string.Join(",", Enumerable.Repeat("1", 32));
        using var file = SafeTensorsFile.Open(Craft($"{{\"a\":{{\"dtype\":\"U8\",\"shape\":[{ok}],\"data_offsets\":[0,1]}}}}", 1, "ok.safetensors"));
        Assert.That(file.GetInfo("a").Shape, Has.Length.EqualTo(32));
    }

    [Test]
    public void Open_NameOverLimit_IsRefused()
    {
        var name = new string('n', 4097);
        Refused(Craft($"{{\"{name}\":{{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}}}", 1), "SafeTensorsReadOptions.MaxNameBytes");
        // An escaped name is measured after unescaping: 4,096 bytes written as 6-byte escapes fit.
        var escaped = string.Concat(Enumerable.Repeat("\\u006e", 4096));
        using var file = SafeTensorsFile.Open(Craft($"{{\"{escaped}\":{{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}}}", 1, "ok.safetensors"));
        Assert.That(file.Names.Single(), Has.Length.EqualTo(4096));
    }

    [Test]
    public void Open_TensorCountAndMetadataOverConfiguredLimits_AreRefused()
    {
        var tensors = string.Join(",", Enumerable.Range(0, 11).Select(i => $"\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}"));
        var path = Craft("{" + tensors + "}", 0);
        Refused(path, "more than 10 tensors, the limit (SafeTensorsReadOptions.MaxTensorCount)", new SafeTensorsReadOptions { MaxTensorCount = 10 });
        using (SafeTensorsFile.Open(path, new SafeTensorsReadOptions { MaxTensorCount = 11 }))
        {
        }
        var meta = string.Join(",", Enumerable.Range(0, 6).Select(i => $"\"k{i}\":\"v\""));
        Refused(Craft("{\"__metadata__\":{" + meta + "}}", 0, "m.safetensors"), "more than 5 entries, the limit (SafeTensorsReadOptions.MaxMetadataEntries)",
            new SafeTensorsReadOptions { MaxMetadataEntries = 5 });
    }

    [Test]
    public void OpenIndex_OverSizeLimit_IsRefused()
    {
        var index = _folder.File("model.safetensors.index.json");
        File.WriteAllText(index, "{\"weight_map\":{}}" + new string(' ', 100));
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(index, new SafeTensorsReadOptions { MaxIndexBytes = 64 }).Dispose())!;
        Assert.That(ex.Message, Does.Contain("SafeTensorsReadOptions.MaxIndexBytes"));
    }

    [Test]
    public void Options_NonPositiveLimit_IsRejectedNamingIt()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new SafeTensorsReadOptions { MaxRank = 0 }.Validate())!;
        Assert.That(ex.ParamName, Is.EqualTo("MaxRank"));
    }

    /// <summary>Managed bytes allocated by opening the file (header parse included), on this thread.</summary>
    private static long AllocatedByOpen(string path)
    {
        SafeTensorsFile.Open(path).Dispose(); // Warm-up: JIT and type loading allocate too.
        var before = GC.GetAllocatedBytesForCurrentThread();
        using (SafeTensorsFile.Open(path))
        {
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }
    }

    // 4. Legal but amplifying headers: the parse allocates a small multiple of the header size.
    [TestCase("zero-size tensors")]
    [TestCase("ignored field of ones")]
    [TestCase("metadata entries")]
    [TestCase("long metadata value")]
    public void Open_LargeLegalHeader_AllocatesBoundedMultipleOfHeaderSize(string kind)
    {
        var header = new StringBuilder("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]");
        switch (kind)
        {
            case "zero-size tensors":
                header.Append('}');
                for (var i = 0; i < 200_000; i++)
                {
                    header.Append(",\"").Append(i).Append("\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}");
                }
                break;
            case "ignored field of ones":
                header.Append(",\"x\":[").Append(string.Join(",", Enumerable.Repeat("1", 2_000_000))).Append("]}");
                break;
            case "metadata entries":
                header.Append("},\"__metadata__\":{").Append(string.Join(",", Enumerable.Range(0, 60_000).Select(i => $"\"{i}\":\"\""))).Append('}');
                break;
            default:
                header.Append("},\"__metadata__\":{\"k\":\"").Append('v', 4_000_000).Append("\"}");
                break;
        }
        header.Append('}');
        var path = Craft(header.ToString(), 4);
        var headerBytes = new FileInfo(path).Length;
        var allocated = AllocatedByOpen(path);
        TestContext.Out.WriteLine($"{kind}: header {headerBytes:N0} B, allocated {allocated:N0} B ({(double)allocated / headerBytes:F2}×)");
        // The header bytes themselves (1×), plus what is kept: a string per name/value (2 bytes per char), and per tensor
        // its info, shape and dictionary entry (~700 bytes allocated for a ~57-byte entry, the worst case: 12×).
        Assert.That(allocated, Is.LessThan(16 * headerBytes + (1 << 20)));
    }

    // 7. Truncated while open: Load used to read a memory map and die of SIGBUS; now both paths throw cleanly.
    [Test]
    public void Load_FileTruncatedWhileOpen_ThrowsFormatException()
    {
        var path = _folder.File("t.safetensors");
        using (var t = torch.ones(1 << 16))
        {
            SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["w"] = t });
        }
        using var file = SafeTensorsFile.Open(path);
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            stream.SetLength(100);
        }
        var ex = Assert.Throws<SafeTensorsFormatException>(() => file.Load("w").Dispose())!;
        Assert.That(ex.Message, Does.Contain("truncated"));
        Assert.That(ex.TensorName, Is.EqualTo("w"));
    }

    // 6. Loading refuses a folder mixing shards of two saves.
    [Test]
    public void OpenSharded_ShardFromAnotherSave_IsRefused()
    {
        var a = Path.Combine(_folder.Path, "a");
        var b = Path.Combine(_folder.Path, "b");
        var stateA = AtomicSaveLoop.ShardedState(0);
        var stateB = AtomicSaveLoop.ShardedState(1);
        SafeTensorsWriter.SaveSharded(a, stateA, AtomicSaveLoop.ShardBytes);
        SafeTensorsWriter.SaveSharded(b, stateB, AtomicSaveLoop.ShardBytes);
        // Same name, different size: refused by the size check alone.
        File.Copy(Path.Combine(b, "model-00001-of-00002.safetensors"), Path.Combine(a, "model-00001-of-00003.safetensors"), overwrite: true);
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(a).Dispose())!;
        Assert.That(ex.Message, Does.Contain("mixes files of different saves"));

        // Same size, different bytes: refused when hashes are verified.
        var c = Path.Combine(_folder.Path, "c");
        using (var scaled = new TensorsScope(stateA.ToDictionary(p => p.Key, p => p.Value * 2)))
        {
            SafeTensorsWriter.SaveSharded(c, scaled.Tensors, AtomicSaveLoop.ShardBytes);
        }
        SafeTensorsWriter.SaveSharded(a, stateA, AtomicSaveLoop.ShardBytes);
        File.Copy(Path.Combine(c, "model-00002-of-00003.safetensors"), Path.Combine(a, "model-00002-of-00003.safetensors"), overwrite: true);
        SafeTensorsCheckpoint.Open(a).Dispose();
        ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(a, new SafeTensorsReadOptions { VerifyShardHashes = true }).Dispose())!;
        Assert.That(ex.Message, Does.Contain("SHA-256"));
        foreach (var t in stateA.Values.Concat(stateB.Values))
        {
            t.Dispose();
        }
    }

    [Test]
    public void SaveSharded_KeepsOtherFilesOfTheFolder_AndRemovesEarlierCheckpointFiles()
    {
        var folder = Path.Combine(_folder.Path, "m");
        var stateA = AtomicSaveLoop.ShardedState(0);
        var stateB = AtomicSaveLoop.ShardedState(1);
        SafeTensorsWriter.SaveSharded(folder, stateA, AtomicSaveLoop.ShardBytes);
        File.WriteAllText(Path.Combine(folder, "README.md"), "kept");
        Directory.CreateDirectory(Path.Combine(folder, "sub"));
        File.WriteAllText(Path.Combine(folder, "sub", "note.txt"), "kept too");
        SafeTensorsWriter.SaveSharded(folder, stateB, AtomicSaveLoop.ShardBytes);
        Assert.That(Directory.GetFileSystemEntries(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal), Is.EqualTo(new[]
        {
            "README.md", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "sub",
        }));
        Assert.That(File.ReadAllText(Path.Combine(folder, "sub", "note.txt")), Is.EqualTo("kept too"));
        Assert.That(Directory.GetFileSystemEntries(_folder.Path), Has.Length.EqualTo(1), "no staging or old folder is left beside it");
        foreach (var t in stateA.Values.Concat(stateB.Values))
        {
            t.Dispose();
        }
    }

    private sealed class TensorsScope(Dictionary<string, Tensor> tensors) : IDisposable
    {
        public Dictionary<string, Tensor> Tensors { get; } = tensors;

        public void Dispose()
        {
            foreach (var t in Tensors.Values)
            {
                t.Dispose();
            }
        }
    }
}
