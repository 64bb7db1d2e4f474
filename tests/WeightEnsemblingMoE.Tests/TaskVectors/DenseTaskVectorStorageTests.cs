using TorchSharp;
using static TorchSharp.torch;
using WeightEnsembling.TaskVectors;

namespace WeightEnsembling.Tests.TaskVectors;

[TestFixture, NonParallelizable]
public sealed class DenseTaskVectorStorageTests
{
    [Test]
    public void WeightedSum_WithRouting_EqualsSumOfScaledTaskVectors()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(3, [4, 5], seed: 1);
        using var storage = new DenseTaskVectorStorage(stack(taus));
        var r = tensor(new float[] { 0.5f, -1f, 2f });
        var expected = 0.5f * taus[0] - taus[1] + 2f * taus[2];
        Assert.That(StorageTestData.MaxAbsDifference(storage.WeightedSum(r), expected), Is.LessThan(1e-5f));
    }

    [Test]
    public void BatchedWeightedSum_EachRow_EqualsWeightedSumOfThatRow()
    {
        using var scope = NewDisposeScope();
        using var storage = new DenseTaskVectorStorage(stack(StorageTestData.RandomTaskVectors(3, [4, 5], seed: 2)));
        var r = randn(2, 3, generator: new Generator(7));
        var batched = storage.BatchedWeightedSum(r);
        Assert.That(batched.shape, Is.EqualTo(new long[] { 2, 4, 5 }));
        for (int b = 0; b < 2; b++)
        {
            Assert.That(StorageTestData.MaxAbsDifference(batched[b], storage.WeightedSum(r[b])), Is.LessThan(1e-5f));
        }
    }

    [Test]
    public void BatchedLinearDelta_EqualsNaivePerSampleComputation()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(3, [4, 5], seed: 3);
        using var storage = new DenseTaskVectorStorage(stack(taus));
        var generator = new Generator(11);
        var x = randn([2, 6, 5], generator: generator);
        var r = randn([2, 3], generator: generator);
        var actual = storage.BatchedLinearDelta(x, r);
        Assert.That(actual.shape, Is.EqualTo(new long[] { 2, 6, 4 }));
        Assert.That(StorageTestData.MaxAbsDifference(actual, StorageTestData.NaiveLinearDelta(x, r, taus)), Is.LessThan(1e-5f));
    }

    [Test]
    public void BatchedLinearDelta_WithWrongInputWidth_ThrowsNamingInput()
    {
        using var scope = NewDisposeScope();
        using var storage = new DenseTaskVectorStorage(zeros(2, 4, 5));
        var ex = Assert.Throws<ArgumentException>(() => storage.BatchedLinearDelta(zeros(1, 3, 4), zeros(1, 2)));
        Assert.That(ex!.ParamName, Is.EqualTo("input"));
    }

    [Test]
    public void Constructor_CopiesInput_SoLaterChangesDoNotLeakIn()
    {
        using var scope = NewDisposeScope();
        var stacked = ones(2, 3);
        using var storage = new DenseTaskVectorStorage(stacked);
        stacked.mul_(5);
        Assert.That(storage.ToDense(1).sum().item<float>(), Is.EqualTo(3f));
    }

    [Test]
    public void NamedBuffers_ContainTaskVectors_AndToKeepsThemWorking()
    {
        using var scope = NewDisposeScope();
        using var storage = new DenseTaskVectorStorage(ones(2, 3, 4));
        Assert.That(storage.named_buffers().Select(b => b.name), Is.EquivalentTo(new[] { "task_vectors" }));
        storage.to(ScalarType.Float64);
        Assert.That(storage.TaskVectors.dtype, Is.EqualTo(ScalarType.Float64));
        Assert.That(storage.WeightedSum(tensor(new double[] { 1, 2 })).sum().item<double>(), Is.EqualTo(36.0));
    }

    [Test]
    public void ElementCountAndBytes_CountTheStack()
    {
        using var scope = NewDisposeScope();
        using var storage = new DenseTaskVectorStorage(zeros(3, 4, 5));
        Assert.That(storage.ElementCount, Is.EqualTo(60));
        Assert.That(storage.Bytes, Is.EqualTo(240));
    }
}
