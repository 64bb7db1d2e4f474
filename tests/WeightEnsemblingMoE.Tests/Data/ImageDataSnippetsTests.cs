using DocsSnippets;
using WeightEnsembling.Tests.Images;

namespace WeightEnsembling.Tests.Data;

/// <summary>Runs the snippets of docs/images-and-datasets.md on the fixtures.</summary>
[TestFixture, NonParallelizable]
public sealed class ImageDataSnippetsTests
{
    private static string Checkpoint => Path.Combine(ImageFixtures.Root, "vit_b32");

    [Test]
    public void DecodeAndPreprocess_GivesClipSizedTensor()
    {
        using var pixels = ImageDataSnippets.DecodeAndPreprocess(Checkpoint, Path.Combine(ImageFixtures.Root, "images", "photo_rgb_300x199.jpg"));

        Assert.That(pixels.shape, Is.EqualTo(new long[] { 3, 224, 224 }));
    }

    [Test]
    public void ImageFolder_SeesEveryImage()
    {
        Assert.That(ImageDataSnippets.ImageFolder(Checkpoint, DataFixtures.ImageFolder), Is.EqualTo(7));
    }

    [Test]
    public void Parquet_FirstBatchHoldsTheFirstLabels()
    {
        Assert.That(ImageDataSnippets.Parquet(Checkpoint, [DataFixtures.Parquet("tiny.parquet")]), Is.EqualTo(new long[] { 0, 0, 0, 1 }));
    }
}
