using System.Text;
using WeightEnsembling.SafeTensors;

namespace WeightEnsembling.Tests.SafeTensors;

/// <summary>One crafted bad file per rule of the reference implementation's validation.</summary>
[TestFixture, NonParallelizable]
public sealed class SafeTensorsValidationTests
{
    private TempFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new TempFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    private string Craft(byte[] header, int dataBytes, ulong? declaredLength = null)
    {
        var path = _folder.File("bad.safetensors");
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes(declaredLength ?? (ulong)header.Length));
        stream.Write(header);
        stream.Write(new byte[dataBytes]);
        return path;
    }

    private string Craft(string header, int dataBytes) => Craft(Encoding.UTF8.GetBytes(header), dataBytes);

    private static SafeTensorsFormatException Rejects(string path, string? tensor, string rule)
    {
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(path).Dispose())!;
        Assert.That(ex.FilePath, Is.EqualTo(path));
        Assert.That(ex.TensorName, Is.EqualTo(tensor));
        Assert.That(ex.Message, Does.Contain(path));
        Assert.That(ex.Message, Does.Contain(rule));
        if (tensor is not null)
        {
            Assert.That(ex.Message, Does.Contain($"'{tensor}'"));
        }
        return ex;
    }

    [Test]
    public void Open_ValidCraftedFile_Succeeds()
    {
        var path = Craft("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[8,9]}}", 9);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Names, Is.EqualTo(new[] { "a", "b" }));
    }

    [Test]
    public void Open_FileShorterThanEightBytes_Throws()
    {
        var path = _folder.File("bad.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        Rejects(path, null, "fewer than the 8-byte");
    }

    [Test]
    public void Open_HeaderLengthOverLimit_ThrowsWithoutAllocating()
    {
        var path = Craft(Encoding.UTF8.GetBytes("{}"), 0, declaredLength: 100_000_001);
        Rejects(path, null, "exceeds the limit");
    }

    [Test]
    public void Open_HeaderLengthPastEndOfFile_Throws()
    {
        var path = Craft(Encoding.UTF8.GetBytes("{}"), 0, declaredLength: 50);
        Rejects(path, null, "runs past the end of the file");
    }

    [Test]
    public void Open_HeaderNotUtf8_Throws()
    {
        var path = Craft([(byte)'{', 0xFF, 0xFE, (byte)'}'], 0);
        Rejects(path, null, "not valid UTF-8");
    }

    [Test]
    public void Open_HeaderNotStartingWithBrace_Throws()
    {
        var path = Craft("[1,2]   ", 0);
        Rejects(path, null, "does not start with '{'");
    }

    [Test]
    public void Open_HeaderInvalidJson_Throws()
    {
        var path = Craft("{\"a\":{\"dtype\":", 0);
        Rejects(path, null, "not valid JSON");
    }

    [Test]
    public void Open_UnknownDType_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
        Rejects(path, "w", "'F33' is not a valid dtype");
    }

    [Test]
    public void Open_DuplicateName_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2);
        Rejects(path, "w", "more than once");
    }

    [Test]
    public void Open_NegativeShapeEntry_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"U8\",\"shape\":[2,-1],\"data_offsets\":[0,0]}}", 0);
        Rejects(path, "w", "shape entry 1 is negative");
    }

    [Test]
    public void Open_MissingDataOffsets_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1);
        Rejects(path, "w", "data_offsets");
    }

    [Test]
    public void Open_MetadataValueNotString_Throws()
    {
        var path = Craft("{\"__metadata__\":{\"n\":1},\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
        Rejects(path, null, "is not a string");
    }

    [Test]
    public void Open_OffsetsEndBeforeBegin_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},\"v\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,1]}}", 2);
        Rejects(path, "v", "end before they begin");
    }

    [Test]
    public void Open_OffsetsPastDataSection_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
        Rejects(path, "w", "run past the end of the data section");
    }

    [Test]
    public void Open_LyingHugeTensor_ThrowsWithoutAllocating()
    {
        var path = Craft("{\"w\":{\"dtype\":\"F64\",\"shape\":[1000000000000],\"data_offsets\":[0,8000000000000]}}", 8);
        Rejects(path, "w", "run past the end of the data section");
    }

    [Test]
    public void Open_ByteLengthNotShapeTimesDTypeSize_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
        Rejects(path, "w", "needs 12");
    }

    [Test]
    public void Open_ShapeProductOverflows_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}", 0);
        Rejects(path, "w", "overflows");
    }

    [Test]
    public void Open_ElementCountTimesSizeOverflows_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}", 0);
        Rejects(path, "w", "overflows");
    }

    [Test]
    public void Open_FirstTensorNotAtZero_ThrowsNamingTensor()
    {
        var path = Craft("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2);
        Rejects(path, "w", "must begin at 0");
    }

    [Test]
    public void Open_GapBetweenTensors_ThrowsNamingTensor()
    {
        var path = Craft("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}", 3);
        Rejects(path, "b", "leave a gap");
    }

    [Test]
    public void Open_OverlappingTensors_ThrowsNamingTensor()
    {
        var path = Craft("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 3);
        Rejects(path, "b", "overlap the previous tensor");
    }

    [Test]
    public void Open_TrailingBytesAfterLastTensor_Throws()
    {
        var path = Craft("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 5);
        Rejects(path, null, "the tensors cover 2 bytes, but the data section has 5");
    }

    [Test]
    public void Open_TruncatedFile_ThrowsNamingLastTensor()
    {
        var path = _folder.File("bad.safetensors");
        using (var a = TorchSharp.torch.ones(4))
        using (var b = TorchSharp.torch.ones(4))
        {
            SafeTensorsWriter.Save(path, new Dictionary<string, TorchSharp.torch.Tensor> { ["a"] = a, ["b"] = b });
        }
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^3]);
        Rejects(path, "b", "truncated file?");
    }

    [Test]
    public void Load_BoolByteNotZeroOrOne_ThrowsNamingTensor()
    {
        var path = _folder.File("bad.safetensors");
        var header = Encoding.UTF8.GetBytes("{\"flags\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}");
        using (var stream = File.Create(path))
        {
            stream.Write(BitConverter.GetBytes((ulong)header.Length));
            stream.Write(header);
            stream.Write([1, 0, 2]);
        }

        using var file = SafeTensorsFile.Open(path);
        var ex = Assert.Throws<SafeTensorsFormatException>(() => file.Load("flags").Dispose())!;
        Assert.That(ex.TensorName, Is.EqualTo("flags"));
        Assert.That(ex.Message, Does.Contain("BOOL element 2"));
    }

    [Test]
    public void Load_DTypeWithoutTorchSharpType_ThrowsNotSupportedButInfoWorks()
    {
        var path = Craft("{\"u\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.GetInfo("u").DType, Is.EqualTo(SafeTensorsDType.U16));
        var ex = Assert.Throws<NotSupportedException>(() => file.Load("u").Dispose())!;
        Assert.That(ex.Message, Does.Contain("'u'"));
    }

    [Test]
    public void Save_ReservedMetadataName_Throws()
    {
        using var a = TorchSharp.torch.ones(1);
        var ex = Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Save(_folder.File("r.safetensors"),
            new Dictionary<string, TorchSharp.torch.Tensor> { ["__metadata__"] = a }))!;
        Assert.That(ex.Message, Does.Contain("__metadata__"));
    }

    [Test]
    public void Open_MissingFile_ThrowsFileNotFound()
    {
        Assert.Throws<FileNotFoundException>(() => SafeTensorsFile.Open(_folder.File("none.safetensors")).Dispose());
    }
}
