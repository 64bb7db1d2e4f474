using WeightEnsembling.Data;
using WeightEnsembling.Images;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Zoo;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Data;

[TestFixture, NonParallelizable]
public sealed class IdxImageDatasetTests
{
    [Test]
    public void GetBatch_PreprocessesGreyImagesAsRgb()
    {
        using var folder = new TempFolder();
        using var images = randint(0, 256, [5, 28, 28], dtype: ScalarType.Byte);
        using var labels = tensor(new byte[] { 0, 1, 2, 3, 4 });
        IdxWriter.Write(folder.File("images.idx.gz"), images);
        IdxWriter.Write(folder.File("labels.idx.gz"), labels);
        var processor = new ClipImageProcessor { ShortestEdge = 32, CropHeight = 32, CropWidth = 32 };

        using var data = IdxImageDataset.Open("digits", folder.File("images.idx.gz"), folder.File("labels.idx.gz"), 10, processor);
        using var batch = data.GetBatch([3]);

        var grey = images[3].data<byte>().ToArray();
        var rgb = grey.SelectMany(v => new[] { v, v, v }).ToArray();
        using var expected = processor.Preprocess(new RgbImage(28, 28, rgb));
        Assert.That(batch.Images[0].allclose(expected, rtol: 0, atol: 0), Is.True);
        Assert.That(batch.Labels!.item<long>(), Is.EqualTo(3));
    }

    [Test]
    public void Open_LabelOutOfRange_ThrowsNamingFile()
    {
        using var folder = new TempFolder();
        using var images = zeros([2, 4, 4], dtype: ScalarType.Byte);
        using var labels = tensor(new byte[] { 0, 9 });
        IdxWriter.Write(folder.File("i.idx"), images);
        IdxWriter.Write(folder.File("l.idx"), labels);

        var e = Assert.Throws<InvalidDataException>(() => IdxImageDataset.Open("d", folder.File("i.idx"), folder.File("l.idx"), 5, new ClipImageProcessor()));

        Assert.That(e!.Message, Does.Contain(folder.File("l.idx")));
    }
}
