using System.Buffers.Binary;
using System.IO.Compression;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Tasks;

[TestFixture, NonParallelizable]
public sealed class IdxReaderTests
{
    private const string FashionMnist = "/usr/share/datasets/fashion-mnist";
    private string _folder = "";

    [SetUp]
    public void CreateFolder()
    {
        _folder = Path.Combine(Path.GetTempPath(), "idx-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_folder);
    }

    [TearDown]
    public void DeleteFolder() => Directory.Delete(_folder, recursive: true);

    private static byte[] Idx(byte code, int[] dims, byte[] data)
    {
        var header = new byte[4 + 4 * dims.Length];
        header[2] = code;
        header[3] = (byte)dims.Length;
        for (int i = 0; i < dims.Length; i++)
        {
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4 + 4 * i), dims[i]);
        }
        return [.. header, .. data];
    }

    private string Write(string name, byte[] content, bool gzip = false)
    {
        string path = Path.Combine(_folder, name);
        if (gzip)
        {
            using var file = File.Create(path);
            using var stream = new GZipStream(file, CompressionLevel.Fastest);
            stream.Write(content);
        }
        else
        {
            File.WriteAllBytes(path, content);
        }
        return path;
    }

    [Test]
    public void Read_RawUnsignedBytes_GivesShapeAndValues()
    {
        using var scope = NewDisposeScope();
        var result = IdxReader.Read(Write("a.idx", Idx(0x08, [2, 3], [0, 1, 2, 253, 254, 255])));
        Assert.That(result.dtype, Is.EqualTo(ScalarType.Byte));
        Assert.That(result.shape, Is.EqualTo(new long[] { 2, 3 }));
        Assert.That(result.data<byte>().ToArray(), Is.EqualTo(new byte[] { 0, 1, 2, 253, 254, 255 }));
    }

    [Test]
    public void Read_Gzip_GivesSameTensorAsRaw()
    {
        using var scope = NewDisposeScope();
        var content = Idx(0x08, [3, 2], [9, 8, 7, 6, 5, 4]);
        var raw = IdxReader.Read(Write("raw.idx", content));
        var compressed = IdxReader.Read(Write("zipped.idx.gz", content, gzip: true));
        Assert.That(compressed.shape, Is.EqualTo(raw.shape));
        Assert.That(compressed.data<byte>().ToArray(), Is.EqualTo(raw.data<byte>().ToArray()));
    }

    [Test]
    public void Read_BigEndianInt32_DecodesValues()
    {
        using var scope = NewDisposeScope();
        var data = new byte[8];
        BinaryPrimitives.WriteInt32BigEndian(data, -2);
        BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(4), 70000);
        var result = IdxReader.Read(Write("i.idx", Idx(0x0C, [2], data)));
        Assert.That(result.dtype, Is.EqualTo(ScalarType.Int32));
        Assert.That(result.data<int>().ToArray(), Is.EqualTo(new[] { -2, 70000 }));
    }

    [Test]
    public void Read_BigEndianFloat64_DecodesValues()
    {
        using var scope = NewDisposeScope();
        var data = new byte[16];
        BinaryPrimitives.WriteDoubleBigEndian(data, 1.5);
        BinaryPrimitives.WriteDoubleBigEndian(data.AsSpan(8), -0.25);
        var result = IdxReader.Read(Write("d.idx", Idx(0x0E, [1, 2], data)));
        Assert.That(result.dtype, Is.EqualTo(ScalarType.Float64));
        Assert.That(result.data<double>().ToArray(), Is.EqualTo(new[] { 1.5, -0.25 }));
    }

    [Test]
    public void Read_TruncatedData_ThrowsNamingFile()
    {
        string path = Write("short.idx", Idx(0x08, [2, 3], [1, 2, 3, 4]));
        var ex = Assert.Throws<InvalidDataException>(() => IdxReader.Read(path));
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("truncated").And.Contain("needs 6"));
    }

    [Test]
    public void Read_TruncatedGzip_ThrowsNamingFile()
    {
        var content = Idx(0x08, [50, 50], Enumerable.Range(0, 2500).Select(i => (byte)(i * 7)).ToArray());
        string full = Write("full.gz", content, gzip: true);
        byte[] gz = File.ReadAllBytes(full);
        string path = Write("cut.gz", gz[..(gz.Length / 2)]);
        var ex = Assert.Throws<InvalidDataException>(() => IdxReader.Read(path));
        Assert.That(ex!.Message, Does.Contain(path));
    }

    [Test]
    public void Read_BadMagic_ThrowsNamingFile()
    {
        string path = Write("bad.idx", [1, 0, 8, 1, 0, 0, 0, 1, 5]);
        var ex = Assert.Throws<InvalidDataException>(() => IdxReader.Read(path));
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("magic"));
    }

    [Test]
    public void Read_UnknownTypeCode_ThrowsNamingCode()
    {
        string path = Write("code.idx", Idx(0x0A, [1], [0]));
        var ex = Assert.Throws<InvalidDataException>(() => IdxReader.Read(path));
        Assert.That(ex!.Message, Does.Contain("0x0A").And.Contain(path));
    }

    [Test]
    public void Read_TrailingBytes_Throws()
    {
        string path = Write("long.idx", Idx(0x08, [2], [1, 2, 3]));
        var ex = Assert.Throws<InvalidDataException>(() => IdxReader.Read(path));
        Assert.That(ex!.Message, Does.Contain("1 bytes beyond"));
    }

    [Test]
    public void ReadDataset_ScalesImagesToUnitRangeAndReadsLabels()
    {
        string images = Write("img.gz", Idx(0x08, [2, 2, 2], [0, 51, 102, 255, 255, 0, 0, 0]), gzip: true);
        string labels = Write("lbl", Idx(0x08, [2], [4, 1]));
        using var data = IdxReader.ReadDataset("digits", images, labels, 10);
        Assert.That(data.Count, Is.EqualTo(2));
        using var batch = data.Batches(2).Single();
        Assert.That(batch.Images.shape, Is.EqualTo(new long[] { 2, 1, 2, 2 }));
        Assert.That(batch.Images.data<float>().ToArray(), Is.EqualTo(new[] { 0f, 0.2f, 0.4f, 1f, 1f, 0f, 0f, 0f }).Within(1e-6f));
        Assert.That(batch.Labels!.data<long>().ToArray(), Is.EqualTo(new long[] { 4, 1 }));
    }

    [Test]
    public void ReadDataset_LabelCountDiffers_ThrowsNamingBothFiles()
    {
        string images = Write("img", Idx(0x08, [2, 1, 1], [0, 1]));
        string labels = Write("lbl", Idx(0x08, [3], [0, 1, 2]));
        var ex = Assert.Throws<InvalidDataException>(() => IdxReader.ReadDataset("d", images, labels, 10));
        Assert.That(ex!.Message, Does.Contain(images).And.Contain(labels).And.Contain("3 labels"));
    }

    [Test]
    public void ReadDataset_LabelOutsideClassCount_ThrowsNamingFile()
    {
        string images = Write("img", Idx(0x08, [1, 1, 1], [0]));
        string labels = Write("lbl", Idx(0x08, [1], [12]));
        var ex = Assert.Throws<InvalidDataException>(() => IdxReader.ReadDataset("d", images, labels, 10));
        Assert.That(ex!.Message, Does.Contain(labels).And.Contain("12"));
    }

    [Test]
    public void ReadDataset_FashionMnistTestSet_HasTenThousandExamplesFirstLabelNine()
    {
        string images = Path.Combine(FashionMnist, "t10k-images-idx3-ubyte.gz");
        string labels = Path.Combine(FashionMnist, "t10k-labels-idx1-ubyte.gz");
        if (!File.Exists(images) || !File.Exists(labels))
        {
            Assert.Ignore($"Fashion-MNIST is not installed under {FashionMnist} (apt-get install dataset-fashion-mnist).");
        }
        using var data = IdxReader.ReadDataset("fashion_mnist", images, labels, 10, ImageTransform.ForClip(32));
        Assert.That(data.Count, Is.EqualTo(10000));
        using var batch = data.Batches(4).First();
        Assert.That(batch.Labels!.data<long>()[0], Is.EqualTo(9L), "the first test image is an ankle boot");
        Assert.That(batch.Images.shape, Is.EqualTo(new long[] { 4, 3, 32, 32 }));
    }
}
