using WeightEnsembling.Data;
using WeightEnsembling.Images;

namespace WeightEnsembling.Tests.Data;

/// <summary>Against parquet files written by an independent writer (parquetjs-lite, tools/fixtures/parquet/write_parquet.js).</summary>
[TestFixture, NonParallelizable]
public sealed class ParquetImageDatasetTests
{
    private static readonly string[] Rows = ["bird/a.jpg", "bird/b.png", "bird/nested/c.webp", "cat/a.bmp", "cat/b.gif", "dog/a.png", "dog/b.jpg", "bird/a.jpg", "dog/a.png", "cat/b.gif"];

    [Test]
    public void Open_ReadsLabelsAndClassCountFromHuggingFaceMetadata()
    {
        using var data = ParquetImageDataset.Open([DataFixtures.Parquet("tiny.parquet")], DataFixtures.Processor);

        Assert.That(data.Count, Is.EqualTo(10));
        Assert.That(data.ClassCount, Is.EqualTo(3));
        Assert.That(data.Name, Is.EqualTo("tiny"));
        using var batch = data.GetBatch(Enumerable.Range(0, 10).Select(i => (long)i).ToArray());
        Assert.That(batch.Labels!.data<long>().ToArray(), Is.EqualTo(new long[] { 0, 0, 0, 1, 1, 2, 2, 0, 2, 1 }));
    }

    [Test]
    public void GetBatch_RowsMatchTheSameFilesDecodedFromDisk()
    {
        using var data = ParquetImageDataset.Open([DataFixtures.Parquet("tiny.parquet")], DataFixtures.Processor, cacheBytes: 0);

        using var batch = data.GetBatch([9, 2, 4, 0]);

        long[] rows = [9, 2, 4, 0];
        for (int i = 0; i < rows.Length; i++)
        {
            var file = Path.Combine(DataFixtures.ImageFolder, Rows[rows[i]]);
            using var expected = DataFixtures.Processor.Preprocess(ImageDecoder.Default.Decode(file));
            Assert.That(batch.Images[i].allclose(expected, rtol: 0, atol: 0), Is.True, $"row {rows[i]} ({Rows[rows[i]]})");
        }
    }

    [Test]
    public void Batches_SameTensorsFor0To3LoaderThreads_AcrossTwoFiles()
    {
        string[] files = [DataFixtures.Parquet("tiny.parquet"), DataFixtures.Parquet("tiny.parquet")];
        List<float[]>? reference = null;
        foreach (int threads in new[] { 0, 1, 2, 3 })
        {
            using var data = ParquetImageDataset.Open(files, DataFixtures.Processor, options: new DataLoaderOptions { LoaderThreads = threads }, cacheBytes: 20_000);
            var images = new List<float[]>();
            foreach (var batch in data.Batches(4, shuffle: true, seed: 2))
            {
                using (batch)
                {
                    images.Add(batch.Images.data<float>().ToArray().Concat(batch.Labels!.data<long>().ToArray().Select(l => (float)l)).ToArray());
                }
            }
            Assert.That(images.Count, Is.EqualTo(5));
            reference ??= images;
            Assert.That(images, Is.EqualTo(reference), $"{threads} loader threads");
        }
    }

    [Test]
    public void Open_MissingColumn_ThrowsNamingFileAndColumn()
    {
        string file = DataFixtures.Parquet("renamed_column.parquet");

        var e = Assert.Throws<InvalidDataException>(() => ParquetImageDataset.Open([file], DataFixtures.Processor, classCount: 3));

        Assert.That(e!.Message, Does.Contain(file).And.Contain("'image'"));
    }

    [Test]
    public void Open_ConfiguredColumns_ReadsUnlabelledSplit()
    {
        using var data = ParquetImageDataset.Open([DataFixtures.Parquet("renamed_column.parquet")], DataFixtures.Processor, classCount: 3, imageColumn: "img", labelColumn: null);

        Assert.That(data.HasLabels, Is.False);
        using var batch = data.GetBatch([0, 1, 2]);
        Assert.That(batch.Labels, Is.Null);
        Assert.That(batch.Images.shape, Is.EqualTo(new long[] { 3, 3, 20, 22 }));
    }

    [Test]
    public void Open_MissingLabelColumn_ThrowsNamingFileAndColumn()
    {
        string file = DataFixtures.Parquet("renamed_column.parquet");

        var e = Assert.Throws<InvalidDataException>(() => ParquetImageDataset.Open([file], DataFixtures.Processor, classCount: 3, imageColumn: "img"));

        Assert.That(e!.Message, Does.Contain(file).And.Contain("'label'"));
    }

    [Test]
    public void Open_LabelOutOfRange_ThrowsNamingFileAndRow()
    {
        string file = DataFixtures.Parquet("bad_label.parquet");

        var e = Assert.Throws<InvalidDataException>(() => ParquetImageDataset.Open([file], DataFixtures.Processor));

        Assert.That(e!.Message, Does.Contain(file).And.Contain("row 1").And.Contain("label 7"));
    }

    [Test]
    public void Batches_CorruptRow_FailNamesRow_SkipCounts()
    {
        string file = DataFixtures.Parquet("corrupt.parquet");
        using (var failing = ParquetImageDataset.Open([file], DataFixtures.Processor, options: new DataLoaderOptions { LoaderThreads = 1 }))
        {
            var e = Assert.Throws<InvalidDataException>(() => failing.Batches(4).ToList().ForEach(b => b.Dispose()));
            Assert.That(e!.Message, Does.Contain(file).And.Contain("row 2"));
        }

        using var skipping = ParquetImageDataset.Open([file], DataFixtures.Processor, options: new DataLoaderOptions { CorruptImages = CorruptImagePolicy.Skip });
        var batches = skipping.Batches(4).ToList();
        Assert.That(batches.Single().Labels!.data<long>().ToArray(), Is.EqualTo(new long[] { 0, 0, 1 }));
        Assert.That(skipping.SkippedCount, Is.EqualTo(1));
        batches.ForEach(b => b.Dispose());
    }

    [Test]
    public void Open_NotParquet_ThrowsNamingFile()
    {
        string file = Path.Combine(DataFixtures.ImageFolder, "dog", "notes.txt");

        var e = Assert.Throws<InvalidDataException>(() => ParquetImageDataset.Open([file], DataFixtures.Processor, classCount: 2));

        Assert.That(e!.Message, Does.Contain(file));
    }

    [Test]
    public void Locate_GivesFileAndRowAcrossFiles()
    {
        string file = DataFixtures.Parquet("tiny.parquet");
        using var data = ParquetImageDataset.Open([file, file], DataFixtures.Processor);

        Assert.That(data.Locate(13), Is.EqualTo((file, 3L)));
    }
}
