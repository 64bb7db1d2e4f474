using WeightEnsembling.Data;
using WeightEnsembling.Images;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Data;

[TestFixture, NonParallelizable]
public sealed class ImageFolderDatasetTests
{
    [Test]
    public void Open_SortsClassesAndFilesLikeTorchvision()
    {
        using var data = ImageFolderDataset.Open(DataFixtures.ImageFolder, DataFixtures.Processor);

        Assert.That(data.Classes, Is.EqualTo(new[] { "bird", "cat", "dog" }));
        Assert.That(data.Count, Is.EqualTo(7), "notes.txt is not an image");
        var relative = Enumerable.Range(0, 7).Select(i => Path.GetRelativePath(DataFixtures.ImageFolder, data.PathOf(i)).Replace('\\', '/'));
        Assert.That(relative, Is.EqualTo(new[] { "bird/a.jpg", "bird/b.png", "bird/nested/c.webp", "cat/a.bmp", "cat/b.gif", "dog/a.png", "dog/b.jpg" }));
        Assert.That(data.Name, Is.EqualTo("imagefolder"));
    }

    [Test]
    public void GetBatch_DecodesAndPreprocessesEachFile()
    {
        using var data = ImageFolderDataset.Open(DataFixtures.ImageFolder, DataFixtures.Processor);

        using var batch = data.GetBatch([6, 0]);

        Assert.That(batch.Images.shape, Is.EqualTo(new long[] { 2, 3, 20, 22 }));
        Assert.That(batch.Labels!.data<long>().ToArray(), Is.EqualTo(new long[] { 2, 0 }));
        using var expected = DataFixtures.Processor.Preprocess(ImageDecoder.Default.Decode(data.PathOf(6)));
        Assert.That(batch.Images[0].allclose(expected, rtol: 0, atol: 0), Is.True);
    }

    [Test]
    public void Open_EmptyClassFolder_ThrowsNamingIt()
    {
        using var folder = new TempFolder();
        Directory.CreateDirectory(folder.File("a"));
        Directory.CreateDirectory(folder.File("b"));
        File.Copy(Path.Combine(DataFixtures.ImageFolder, "bird", "a.jpg"), folder.File("a/x.jpg"));
        File.WriteAllText(folder.File("b/readme.txt"), "no images");

        var e = Assert.Throws<InvalidDataException>(() => ImageFolderDataset.Open(folder.Path, DataFixtures.Processor));

        Assert.That(e!.Message, Does.Contain(Path.Combine(folder.Path, "b")));
    }

    [Test]
    public void Open_NoClassFolder_ThrowsNamingRoot()
    {
        using var folder = new TempFolder();

        var e = Assert.Throws<InvalidDataException>(() => ImageFolderDataset.Open(folder.Path, DataFixtures.Processor));

        Assert.That(e!.Message, Does.Contain(folder.Path));
    }

    [Test]
    public void Open_ProcessorWithoutFixedSize_Throws()
    {
        var processor = new ClipImageProcessor { DoCenterCrop = false };

        Assert.Throws<ArgumentException>(() => ImageFolderDataset.Open(DataFixtures.ImageFolder, processor));
    }

    [Test]
    public void Batches_SameTensorsFor0To3LoaderThreads()
    {
        var reference = Collect(0, shuffle: true);
        foreach (int threads in new[] { 1, 2, 3 })
        {
            var other = Collect(threads, shuffle: true);
            Assert.That(other.Count, Is.EqualTo(reference.Count));
            for (int b = 0; b < reference.Count; b++)
            {
                Assert.That(other[b].Labels, Is.EqualTo(reference[b].Labels), $"threads {threads}, batch {b}: labels");
                Assert.That(other[b].Images, Is.EqualTo(reference[b].Images), $"threads {threads}, batch {b}: images");
            }
        }
    }

    [Test]
    public void Batches_ShuffleDependsOnSeedOnly()
    {
        using var data = ImageFolderDataset.Open(DataFixtures.ImageFolder, DataFixtures.Processor, new DataLoaderOptions { LoaderThreads = 2 });
        var a = data.Batches(7, shuffle: true, seed: 1).Select(Labels).ToList();
        var b = data.Batches(7, shuffle: true, seed: 1).Select(Labels).ToList();

        Assert.That(a, Is.EqualTo(b));
        Assert.That(a[0].Order(), Is.EqualTo(new long[] { 0, 0, 0, 1, 1, 2, 2 }));
    }

    [Test]
    public void Endless_SameBatchesFor1And3Threads_AndEarlyStopReturns()
    {
        var one = EndlessLabels(1);
        var three = EndlessLabels(3);

        Assert.That(three, Is.EqualTo(one));
        Assert.That(one.Count, Is.EqualTo(9));
    }

    [Test]
    public void Split_SubsetsLoadThroughTheParentsPrefetcher()
    {
        using var data = ImageFolderDataset.Open(DataFixtures.ImageFolder, DataFixtures.Processor, new DataLoaderOptions { LoaderThreads = 2 });
        var parts = data.Split([0.5, 0.5], seed: 3);

        long total = 0;
        foreach (var part in parts)
        {
            foreach (var batch in part.Batches(2))
            {
                total += batch.Count;
                batch.Dispose();
            }
        }

        Assert.That(total, Is.EqualTo(7));
    }

    [Test]
    public void Batches_FailingImage_ThrowsNamingFile_SkipPolicyCounts()
    {
        using var folder = new TempFolder();
        Directory.CreateDirectory(folder.File("a"));
        var good = File.ReadAllBytes(Path.Combine(DataFixtures.ImageFolder, "bird", "a.jpg"));
        File.WriteAllBytes(folder.File("a/1.jpg"), good);
        File.WriteAllBytes(folder.File("a/2.jpg"), good[..200]);
        File.WriteAllBytes(folder.File("a/3.jpg"), good);

        using (var failing = ImageFolderDataset.Open(folder.Path, DataFixtures.Processor, new DataLoaderOptions { LoaderThreads = 2 }))
        {
            var e = Assert.Throws<InvalidDataException>(() => failing.Batches(1).ToList().ForEach(b => b.Dispose()));
            Assert.That(e!.Message, Does.Contain(folder.File("a/2.jpg")));
        }

        using var skipping = ImageFolderDataset.Open(folder.Path, DataFixtures.Processor, new DataLoaderOptions { LoaderThreads = 2, CorruptImages = CorruptImagePolicy.Skip });
        var batches = skipping.Batches(1).ToList();
        Assert.That(batches.Count, Is.EqualTo(2), "the batch holding only the corrupt image is dropped");
        Assert.That(skipping.SkippedCount, Is.EqualTo(1));
        batches.ForEach(b => b.Dispose());
    }

    private static List<long[]> Labels(IEnumerable<TaskBatch> batches) => batches.Select(Labels).ToList();

    private static long[] Labels(TaskBatch batch)
    {
        using (batch)
        {
            return batch.Labels!.data<long>().ToArray();
        }
    }

    private static List<long[]> EndlessLabels(int threads)
    {
        using var data = ImageFolderDataset.Open(DataFixtures.ImageFolder, DataFixtures.Processor, new DataLoaderOptions { LoaderThreads = threads, PrefetchBatches = 2 });
        return data.Endless(3, seed: 5).Take(9).Select(Labels).ToList();
    }

    private static List<(float[] Images, long[] Labels)> Collect(int threads, bool shuffle)
    {
        using var data = ImageFolderDataset.Open(DataFixtures.ImageFolder, DataFixtures.Processor, new DataLoaderOptions { LoaderThreads = threads, PrefetchBatches = 1 });
        var result = new List<(float[], long[])>();
        foreach (var batch in data.Batches(3, shuffle, seed: 11))
        {
            using (batch)
            {
                result.Add((batch.Images.data<float>().ToArray(), batch.Labels!.data<long>().ToArray()));
            }
        }
        return result;
    }
}
