using TorchSharp;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors;

[TestFixture, NonParallelizable]
public sealed class SafeTensorsRoundTripTests
{
    private static readonly ScalarType[] AllTypes =
    [
        ScalarType.Float64, ScalarType.Float32, ScalarType.Float16, ScalarType.BFloat16, ScalarType.Int64,
        ScalarType.Int32, ScalarType.Int16, ScalarType.Int8, ScalarType.Byte, ScalarType.Bool,
    ];

    private static Tensor Sample(ScalarType type) => type switch
    {
        ScalarType.Bool => torch.tensor(new[] { true, false, false, true, true, false }).reshape(2, 3),
        ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 =>
            torch.tensor(new[] { 1.5, -2.25, 0.0, 3.0e3, -7.0, 0.125 }).reshape(2, 3).to_type(type),
        ScalarType.Byte => torch.tensor(new byte[] { 0, 1, 127, 128, 200, 255 }).reshape(2, 3),
        _ => torch.tensor(new long[] { -100, -1, 0, 1, 42, 100 }).reshape(2, 3).to_type(type),
    };

    // TorchSharp 0.107 has no Tensor.view(dtype): bit patterns go in and out through the raw byte span.
    private static Tensor FromBits<T>(T[] bits, ScalarType type) where T : unmanaged
    {
        var tensor = torch.empty(bits.Length, dtype: type);
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan()).CopyTo(tensor.bytes);
        return tensor;
    }

    private static T[] Bits<T>(Tensor tensor) where T : unmanaged =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(tensor.bytes).ToArray();

    [TestCaseSource(nameof(AllTypes))]
    public void SaveThenLoad_EachDType_PreservesDTypeShapeAndBytes(ScalarType type)
    {
        using var folder = new TempFolder();
        var path = folder.File("a.safetensors");
        using var original = Sample(type);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["x"] = original });

        using var file = SafeTensorsFile.Open(path);
        using var loaded = file.Load("x");
        Assert.That(loaded.dtype, Is.EqualTo(type));
        Assert.That(loaded.shape, Is.EqualTo(new long[] { 2, 3 }));
        Assert.That(loaded.bytes.ToArray(), Is.EqualTo(original.bytes.ToArray()));
        Assert.That(loaded.eq(original).all().item<bool>(), Is.True);
    }

    [Test]
    public void SaveThenLoad_HalfAndBFloat16SpecialBitPatterns_ArePreservedExactly()
    {
        using var folder = new TempFolder();
        var path = folder.File("bits.safetensors");
        // +inf, -0, a quiet NaN with payload, a signalling-looking NaN, the smallest subnormal, the largest finite.
        short[] patterns = [0x7C00, unchecked((short)0x8000), 0x7E01, 0x7D55, 0x0001, 0x7BFF];
        using var half = FromBits(patterns, ScalarType.Float16);
        using var bf16 = FromBits(patterns, ScalarType.BFloat16);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["h"] = half, ["b"] = bf16 });

        using var file = SafeTensorsFile.Open(path);
        using var h = file.Load("h");
        using var b = file.Load("b");
        Assert.That(h.dtype, Is.EqualTo(ScalarType.Float16));
        Assert.That(b.dtype, Is.EqualTo(ScalarType.BFloat16));
        Assert.That(Bits<short>(h), Is.EqualTo(patterns));
        Assert.That(Bits<short>(b), Is.EqualTo(patterns));
    }

    [Test]
    public void SaveThenLoad_Float32NaNPayloadAndNegativeZero_ArePreservedExactly()
    {
        using var folder = new TempFolder();
        var path = folder.File("nan.safetensors");
        int[] patterns = [0x7FC00001, unchecked((int)0xFFC12345), unchecked((int)0x80000000), 0x7F800000];
        using var floats = FromBits(patterns, ScalarType.Float32);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["f"] = floats });

        using var file = SafeTensorsFile.Open(path);
        using var loaded = file.Load("f");
        Assert.That(Bits<int>(loaded), Is.EqualTo(patterns));
    }

    [Test]
    public void SaveThenLoad_ScalarAndEmptyTensors_KeepTheirShapes()
    {
        using var folder = new TempFolder();
        var path = folder.File("shapes.safetensors");
        using var scalar = torch.tensor(3.5f);
        using var empty = torch.zeros(0, 4);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["s"] = scalar, ["e"] = empty });

        using var file = SafeTensorsFile.Open(path);
        using var s = file.Load("s");
        using var e = file.Load("e");
        Assert.That(s.shape, Is.Empty);
        Assert.That(s.item<float>(), Is.EqualTo(3.5f));
        Assert.That(e.shape, Is.EqualTo(new long[] { 0, 4 }));
    }

    [Test]
    public void Save_NonContiguousTensor_WritesItsLogicalValues()
    {
        using var folder = new TempFolder();
        var path = folder.File("t.safetensors");
        using var matrix = torch.arange(6, dtype: ScalarType.Float32).reshape(2, 3);
        using var transposed = matrix.t();
        Assert.That(transposed.is_contiguous(), Is.False);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["t"] = transposed });

        using var file = SafeTensorsFile.Open(path);
        using var loaded = file.Load("t");
        Assert.That(loaded.shape, Is.EqualTo(new long[] { 3, 2 }));
        Assert.That(loaded.data<float>().ToArray(), Is.EqualTo(new float[] { 0, 3, 1, 4, 2, 5 }));
    }

    [Test]
    public void Save_SliceWithStorageOffset_WritesOnlyTheSlice()
    {
        using var folder = new TempFolder();
        var path = folder.File("slice.safetensors");
        using var all = torch.arange(10, dtype: ScalarType.Int64);
        using var slice = all.narrow(0, 3, 4);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["s"] = slice });

        using var file = SafeTensorsFile.Open(path);
        using var loaded = file.Load("s");
        Assert.That(loaded.data<long>().ToArray(), Is.EqualTo(new long[] { 3, 4, 5, 6 }));
    }

    [Test]
    public void LoadAll_SeveralTensors_ReturnsEveryTensorByName()
    {
        using var folder = new TempFolder();
        var path = folder.File("all.safetensors");
        using var a = torch.ones(2, dtype: ScalarType.Float64);
        using var b = torch.arange(3, dtype: ScalarType.Int64);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["b"] = b, ["a"] = a });

        using var file = SafeTensorsFile.Open(path);
        var all = file.LoadAll();
        try
        {
            Assert.That(file.Names, Is.EqualTo(new[] { "a", "b" }));
            Assert.That(all.Keys, Is.EquivalentTo(new[] { "a", "b" }));
            Assert.That(all["a"].data<double>().ToArray(), Is.EqualTo(new[] { 1.0, 1.0 }));
            Assert.That(all["b"].data<long>().ToArray(), Is.EqualTo(new long[] { 0, 1, 2 }));
        }
        finally
        {
            foreach (var t in all.Values)
            {
                t.Dispose();
            }
        }
    }

    [Test]
    public void SaveThenOpen_Metadata_RoundTrips()
    {
        using var folder = new TempFolder();
        var path = folder.File("meta.safetensors");
        using var a = torch.ones(1);
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "quote \" backslash \\ newline \n ünïcode ✓" };
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["a"] = a }, metadata);

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Metadata, Is.EquivalentTo(metadata));
    }

    [Test]
    public void Open_WithoutMetadata_HasEmptyMetadata()
    {
        using var folder = new TempFolder();
        var path = folder.File("nometa.safetensors");
        using var a = torch.ones(1);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["a"] = a });

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Metadata, Is.Empty);
    }

    [Test]
    public void GetInfo_AfterSave_ReportsDTypeShapeAndOffsets()
    {
        using var folder = new TempFolder();
        var path = folder.File("info.safetensors");
        using var a = torch.ones(2, 3, dtype: ScalarType.Float32);
        using var b = torch.ones(4, dtype: ScalarType.Float64);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["a"] = a, ["b"] = b });

        using var file = SafeTensorsFile.Open(path);
        var info = file.GetInfo("b");
        Assert.That(info.Name, Is.EqualTo("b"));
        Assert.That(info.DType, Is.EqualTo(SafeTensorsDType.F64));
        Assert.That(info.Shape, Is.EqualTo(new long[] { 4 }));
        Assert.That((info.Begin, info.End), Is.EqualTo((24L, 56L)));
    }

    [Test]
    public void Save_Header_IsPaddedSoDataStartsAtMultipleOfEight()
    {
        using var folder = new TempFolder();
        var path = folder.File("pad.safetensors");
        using var a = torch.ones(1);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["abc"] = a });

        var bytes = File.ReadAllBytes(path);
        var headerLength = BitConverter.ToInt64(bytes, 0);
        Assert.That(headerLength % 8, Is.Zero);
        Assert.That(bytes.Length, Is.EqualTo(8 + headerLength + 4));
        var header = System.Text.Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        Assert.That(header.TrimEnd(' '), Is.EqualTo("{\"abc\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"));
    }

    [Test]
    public void Save_SameTensorsTwice_WritesIdenticalBytes()
    {
        using var folder = new TempFolder();
        using var a = torch.arange(5, dtype: ScalarType.Float32);
        using var b = torch.arange(3, dtype: ScalarType.Int32);
        SafeTensorsWriter.Save(folder.File("1.safetensors"), new Dictionary<string, Tensor> { ["a"] = a, ["b"] = b },
            new Dictionary<string, string> { ["y"] = "2", ["x"] = "1" });
        SafeTensorsWriter.Save(folder.File("2.safetensors"), new Dictionary<string, Tensor> { ["b"] = b, ["a"] = a },
            new Dictionary<string, string> { ["x"] = "1", ["y"] = "2" });

        Assert.That(File.ReadAllBytes(folder.File("2.safetensors")), Is.EqualTo(File.ReadAllBytes(folder.File("1.safetensors"))));
    }

    [Test]
    public void Load_UnknownName_ThrowsKeyNotFoundNamingTensor()
    {
        using var folder = new TempFolder();
        var path = folder.File("k.safetensors");
        using var a = torch.ones(1);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["a"] = a });

        using var file = SafeTensorsFile.Open(path);
        var ex = Assert.Throws<KeyNotFoundException>(() => file.Load("nope"));
        Assert.That(ex!.Message, Does.Contain("nope"));
    }

    [Test]
    public void Load_AfterDispose_ThrowsObjectDisposed()
    {
        using var folder = new TempFolder();
        var path = folder.File("d.safetensors");
        using var a = torch.ones(1);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["a"] = a });

        var file = SafeTensorsFile.Open(path);
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.Load("a").Dispose());
    }

    [Test]
    public void Load_TensorOutlivesFile_KeepsItsValues()
    {
        using var folder = new TempFolder();
        var path = folder.File("own.safetensors");
        using var a = torch.arange(4, dtype: ScalarType.Float32);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["a"] = a });

        Tensor loaded;
        using (var file = SafeTensorsFile.Open(path))
        {
            loaded = file.Load("a");
        }
        File.Delete(path);
        using (loaded)
        {
            Assert.That(loaded.data<float>().ToArray(), Is.EqualTo(new float[] { 0, 1, 2, 3 }));
        }
    }

    [Test]
    public void Save_UnsupportedDType_ThrowsNamingTensor()
    {
        using var folder = new TempFolder();
        using var c = torch.zeros(2, dtype: ScalarType.ComplexFloat64);
        var ex = Assert.Throws<ArgumentException>(() =>
            SafeTensorsWriter.Save(folder.File("c.safetensors"), new Dictionary<string, Tensor> { ["cplx"] = c }));
        Assert.That(ex!.Message, Does.Contain("cplx"));
        Assert.That(Directory.GetFiles(folder.Path), Is.Empty);
    }
}
