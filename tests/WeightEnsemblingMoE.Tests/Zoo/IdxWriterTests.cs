using TorchSharp;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Zoo;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Zoo;

[TestFixture, NonParallelizable]
public sealed class IdxWriterTests
{
    [TestCase("images.idx.gz")]
    [TestCase("images.idx")]
    public void Write_ThenRead_RoundTripsValuesAndShape(string fileName)
    {
        using var folder = new TempFolder();
        using var values = randint(0, 256, [3, 5, 4], dtype: ScalarType.Byte);

        IdxWriter.Write(folder.File(fileName), values);
        using var read = IdxReader.Read(folder.File(fileName));

        Assert.That(read.shape, Is.EqualTo(values.shape));
        Assert.That(read.data<byte>().ToArray(), Is.EqualTo(values.data<byte>().ToArray()));
    }

    [Test]
    public void Write_EmptyTensor_ReadsBackEmptyWithShape()
    {
        using var folder = new TempFolder();
        using var values = zeros([0, 28, 28], dtype: ScalarType.Byte);

        IdxWriter.Write(folder.File("empty.idx.gz"), values);
        using var read = IdxReader.Read(folder.File("empty.idx.gz"));

        Assert.That(read.shape, Is.EqualTo(new long[] { 0, 28, 28 }));
    }

    [Test]
    public void Write_Float_ThrowsNamingType()
    {
        using var folder = new TempFolder();
        using var values = zeros(2, 2);

        var e = Assert.Throws<ArgumentException>(() => IdxWriter.Write(folder.File("x.idx"), values));
        Assert.That(e!.Message, Does.Contain("uint8").And.Contain("Float32"));
    }

    [Test]
    public void Write_Gzip_StartsWithGzipMagic()
    {
        using var folder = new TempFolder();
        using var values = ones([4], dtype: ScalarType.Byte);

        IdxWriter.Write(folder.File("x.idx.gz"), values);

        var bytes = File.ReadAllBytes(folder.File("x.idx.gz"));
        Assert.That(bytes[..2], Is.EqualTo(new byte[] { 0x1F, 0x8B }));
        Assert.That(Directory.GetFiles(folder.Path), Has.Length.EqualTo(1), "no temporary file is left behind");
    }
}
