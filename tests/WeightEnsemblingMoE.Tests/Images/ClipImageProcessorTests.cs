using WeightEnsembling.Images;

namespace WeightEnsembling.Tests.Images;

[TestFixture]
public sealed class ClipImageProcessorTests
{
    [Test]
    public void FromPretrained_OldIntegerFormat_ReadsShortestEdgeAndSquareCrop()
    {
        var p = ClipImageProcessor.FromPretrained(Path.Combine(ImageFixtures.Root, "vit_b32"));

        Assert.That((p.ShortestEdge, p.CropHeight, p.CropWidth, p.Resample), Is.EqualTo(((int?)224, 224, 224, 3)));
        Assert.That(p.ImageMean, Is.EqualTo(new[] { 0.48145466f, 0.4578275f, 0.40821073f }));
    }

    [Test]
    public void FromPretrained_DictFormat_ReadsNonSquareCrop()
    {
        var p = ClipImageProcessor.FromPretrained(Path.Combine(ImageFixtures.Root, "small"));

        Assert.That((p.ShortestEdge, p.CropHeight, p.CropWidth, p.OutputHeight, p.OutputWidth), Is.EqualTo(((int?)96, 80, 88, (int?)80, (int?)88)));
    }

    [Test]
    public void FromJson_FixedHeightWidth_ResizesToThatSize()
    {
        var p = ClipImageProcessor.FromJson("""{"size": {"height": 5, "width": 7}, "do_center_crop": false}""");
        var image = new RgbImage(10, 10, new byte[300]);

        var result = p.ResizeAndCrop(image);

        Assert.That((result.Width, result.Height), Is.EqualTo((7, 5)));
    }

    [Test]
    public void FromJson_UnsupportedResample_ThrowsNamingKey()
    {
        var e = Assert.Throws<InvalidDataException>(() => ClipImageProcessor.FromJson("""{"resample": 1}""", "cfg.json"));

        Assert.That(e!.Message, Does.Contain("cfg.json").And.Contain("resample"));
    }

    [Test]
    public void FromJson_WrongType_ThrowsNamingSource()
    {
        var e = Assert.Throws<InvalidDataException>(() => ClipImageProcessor.FromJson("""{"do_resize": "yes"}""", "cfg.json"));

        Assert.That(e!.Message, Does.Contain("cfg.json"));
    }

    [Test]
    public void FromPretrained_NoConfig_ThrowsFileNotFound()
    {
        Assert.Throws<FileNotFoundException>(() => ClipImageProcessor.FromPretrained(Path.GetTempPath()));
    }

    [Test]
    public void ResizeAndCrop_PortraitImage_KeepsAspectAsTransformers()
    {
        // 61 × 97 → short side 96: long side int(96 * 97 / 61) = 152.
        var p = new ClipImageProcessor { ShortestEdge = 96, DoCenterCrop = false };

        var result = p.ResizeAndCrop(new RgbImage(61, 97, new byte[61 * 97 * 3]));

        Assert.That((result.Width, result.Height), Is.EqualTo((96, 152)));
    }

    [Test]
    public void Preprocess_Batch_StacksChannelsFirst()
    {
        var p = new ClipImageProcessor { ShortestEdge = 4, CropHeight = 4, CropWidth = 4, DoNormalize = false };
        var white = new RgbImage(6, 4, Enumerable.Repeat((byte)255, 72).ToArray());

        using var batch = p.Preprocess([white, white]);

        Assert.That(batch.shape, Is.EqualTo(new long[] { 2, 3, 4, 4 }));
        Assert.That(batch.min().item<float>(), Is.EqualTo(1f).Within(1e-6));
    }
}
