using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Tasks;

[TestFixture, NonParallelizable]
public sealed class TaskDatasetTests
{
    private static List<long[]> Take(IEnumerable<TaskBatch> batches, int count)
    {
        var ids = new List<long[]>();
        foreach (var batch in batches.Take(count))
        {
            using (batch)
            {
                ids.Add(TaskFixtures.Ids(batch));
            }
        }
        return ids;
    }

    [Test]
    public void Batches_NoShuffle_VisitsAllInOrderWithSmallerLastBatch()
    {
        using var data = TaskFixtures.Indexed(7);
        var ids = Take(data.Batches(3), int.MaxValue);
        Assert.That(ids, Is.EqualTo(new[] { new long[] { 0, 1, 2 }, [3, 4, 5], [6] }));
    }

    [Test]
    public void Batches_Labelled_LabelsMatchImages()
    {
        using var data = TaskFixtures.Indexed(5, classCount: 3);
        foreach (var batch in data.Batches(2, shuffle: true, seed: 3))
        {
            using (batch)
            {
                var expected = TaskFixtures.Ids(batch).Select(i => i % 3).ToArray();
                Assert.That(batch.Labels!.dtype, Is.EqualTo(ScalarType.Int64));
                Assert.That(batch.Labels.data<long>().ToArray(), Is.EqualTo(expected));
            }
        }
    }

    [Test]
    public void Batches_ShuffleSameSeed_GivesSamePermutation()
    {
        using var data = TaskFixtures.Indexed(20);
        var first = Take(data.Batches(6, shuffle: true, seed: 42), int.MaxValue).SelectMany(b => b).ToArray();
        var second = Take(data.Batches(6, shuffle: true, seed: 42), int.MaxValue).SelectMany(b => b).ToArray();
        var other = Take(data.Batches(6, shuffle: true, seed: 43), int.MaxValue).SelectMany(b => b).ToArray();
        Assert.That(first, Is.EqualTo(second));
        Assert.That(first, Is.EquivalentTo(Enumerable.Range(0, 20).Select(i => (long)i)));
        Assert.That(first, Is.Not.EqualTo(Enumerable.Range(0, 20).Select(i => (long)i)));
        Assert.That(other, Is.Not.EqualTo(first));
    }

    [Test]
    public void Endless_SameSeed_GivesSameSequenceAcrossEpochs()
    {
        using var data = TaskFixtures.Indexed(5);
        var first = Take(data.Endless(2, seed: 7), 12);
        var second = Take(data.Endless(2, seed: 7), 12);
        Assert.That(first, Is.EqualTo(second));
    }

    [Test]
    public void Endless_EachEpoch_IsANewPermutationOfAllExamples()
    {
        using var data = TaskFixtures.Indexed(6);
        // 6 examples in batches of 3: two batches per epoch; take four epochs.
        var batches = Take(data.Endless(3, seed: 1), 8);
        var epochs = Enumerable.Range(0, 4).Select(e => batches[2 * e].Concat(batches[2 * e + 1]).ToArray()).ToList();
        foreach (var epoch in epochs)
        {
            Assert.That(epoch, Is.EquivalentTo(new long[] { 0, 1, 2, 3, 4, 5 }));
        }
        Assert.That(epochs.Select(e => string.Join(",", e)).Distinct().Count(), Is.GreaterThan(1), "the epochs must be reshuffled");
    }

    [Test]
    public void Subset_GivesChosenExamplesInOrder()
    {
        using var data = TaskFixtures.Indexed(10);
        using var subset = data.Subset([8, 2, 5]);
        Assert.That(subset.Count, Is.EqualTo(3));
        Assert.That(Take(subset.Batches(10), 1).Single(), Is.EqualTo(new long[] { 8, 2, 5 }));
    }

    [Test]
    public void Subset_IndexOutOfRange_ThrowsNamingIndex()
    {
        using var data = TaskFixtures.Indexed(4);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => data.Subset([1, 4]));
        Assert.That(ex!.Message, Does.Contain("Index 4").And.Contain("4 examples"));
    }

    [Test]
    public void Split_Parts_AreDisjointAndCoverAll()
    {
        using var data = TaskFixtures.Indexed(10);
        var parts = data.Split([0.6, 0.2, 0.2], seed: 5);
        Assert.That(parts.Select(p => p.Count), Is.EqualTo(new long[] { 6, 2, 2 }));
        var all = parts.SelectMany(p => Take(p.Batches(4), int.MaxValue).SelectMany(b => b)).ToArray();
        Assert.That(all, Is.EquivalentTo(Enumerable.Range(0, 10).Select(i => (long)i)));
    }

    [Test]
    public void Split_SameSeed_GivesSameParts()
    {
        using var data = TaskFixtures.Indexed(10);
        var a = Take(data.Split([0.5, 0.5], seed: 9)[0].Batches(10), 1).Single();
        var b = Take(data.Split([0.5, 0.5], seed: 9)[0].Batches(10), 1).Single();
        Assert.That(a, Is.EqualTo(b));
    }

    [Test]
    public void Split_FractionsNotSummingToOne_Throws()
    {
        using var data = TaskFixtures.Indexed(10);
        var ex = Assert.Throws<ArgumentException>(() => data.Split([0.5, 0.4], seed: 0));
        Assert.That(ex!.Message, Does.Contain("sum to 0.9"));
    }

    [Test]
    public void Unlabelled_Batches_HaveNoLabels()
    {
        using var data = TaskFixtures.Indexed(3, labelled: false);
        Assert.That(data.HasLabels, Is.False);
        using var batch = data.Batches(3).Single();
        Assert.That(batch.Labels, Is.Null);
    }

    [Test]
    public void Constructor_CallerDisposesInputs_DatasetStillReadsThem()
    {
        var images = ones(2, 1, 2, 2);
        var labels = tensor(new long[] { 0, 1 });
        using var data = new InMemoryTaskDataset("t", images, labels, 2);
        images.Dispose();
        labels.Dispose();
        using var batch = data.Batches(2).Single();
        Assert.That(batch.Images.sum().item<float>(), Is.EqualTo(8f));
        Assert.That(batch.Labels!.data<long>().ToArray(), Is.EqualTo(new long[] { 0, 1 }));
    }

    [Test]
    public void Constructor_WithTransform_AppliesItPerBatch()
    {
        using var scope = NewDisposeScope();
        using var data = new InMemoryTaskDataset("t", ones(3, 1, 2, 2), null, 2, new ImageTransform { ReplicateToRgb = true, Size = 4 });
        using var batch = data.Batches(2).First();
        Assert.That(batch.Images.shape, Is.EqualTo(new long[] { 2, 3, 4, 4 }));
    }

    [Test]
    public void Constructor_ImagesOfRankThree_ThrowsNamingImages()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => new InMemoryTaskDataset("t", zeros(2, 3, 3), null, 2));
        Assert.That(ex!.ParamName, Is.EqualTo("images"));
        Assert.That(ex.Message, Does.Contain("rank 3"));
    }

    [Test]
    public void Constructor_LabelOutOfRange_ThrowsNamingLabels()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => new InMemoryTaskDataset("t", zeros(2, 1, 2, 2), tensor(new long[] { 0, 3 }), 3));
        Assert.That(ex!.ParamName, Is.EqualTo("labels"));
        Assert.That(ex.Message, Does.Contain("[0, 3)").And.Contain("[0, 3]"));
    }

    [Test]
    public void Constructor_NaNImage_ThrowsNamingImages()
    {
        using var scope = NewDisposeScope();
        var images = zeros(2, 1, 2, 2);
        images[1, 0, 1, 1] = tensor(float.NaN);
        var ex = Assert.Throws<ArgumentException>(() => new InMemoryTaskDataset("t", images, null, 2));
        Assert.That(ex!.ParamName, Is.EqualTo("images"));
        Assert.That(ex.Message, Does.Contain("NaN"));
    }
}
