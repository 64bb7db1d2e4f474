using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;
using WeightEnsembling.TaskVectors;

namespace WeightEnsembling.Tests.TaskVectors;

[TestFixture, NonParallelizable]
public sealed class SparseTaskVectorStorageTests
{
    [Test]
    public void ToDense_AtZeroSparsity_EqualsDenseExactly()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(3, [4, 5], seed: 21);
        using var sparse = new SparseTaskVectorStorage(taus, 0.0);
        using var dense = new DenseTaskVectorStorage(stack(taus));
        var r = tensor(new float[] { 0.3f, -0.7f, 1.1f });
        for (int t = 0; t < 3; t++)
        {
            Assert.That(sparse.ToDense(t).eq(taus[t]).all().item<bool>(), Is.True, $"task {t}");
        }

        // Same elements, different summation order (index_add vs matmul): equal up to float rounding.
        Assert.That(StorageTestData.MaxAbsDifference(sparse.WeightedSum(r), dense.WeightedSum(r)), Is.LessThan(1e-6f));
    }

    [Test]
    public void KeptCount_MatchesStrictQuantileRule()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(2, [10, 20], seed: 22);
        using var sparse = new SparseTaskVectorStorage(taus, 0.75);
        for (int t = 0; t < 2; t++)
        {
            var magnitude = taus[t].abs();
            long expected = magnitude.gt(magnitude.reshape(-1).quantile(tensor(0.75f))).sum().item<long>();
            Assert.That(sparse.KeptCount(t), Is.EqualTo(expected));
            Assert.That(sparse.ToDense(t).ne(0).sum().item<long>(), Is.EqualTo(expected));
        }
    }

    [Test]
    public void ToDense_KeepsLargestValuesUnchangedAndZeroesTheRest()
    {
        using var scope = NewDisposeScope();
        var tau = tensor(new float[] { 0.1f, -5f, 0.2f, 3f, -0.3f, 0.05f, 4f, -0.01f }).reshape(2, 4);
        using var sparse = new SparseTaskVectorStorage([tau], 0.6);
        // |τ| sorted: .01 .05 .1 .2 .3 3 4 5; rank 0.6·7 = 4.2 → .3 + 0.2·(3 − .3) = 0.84; kept: −5, 3, 4.
        Assert.That(sparse.ToDense(0).data<float>().ToArray(), Is.EqualTo(new float[] { 0, -5, 0, 3, 0, 0, 4, 0 }));
    }

    [Test]
    public void Bytes_AreAboutOneMinusPOfDensePlusIndexOverhead()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(4, [32, 32], seed: 23);
        using var sparse = new SparseTaskVectorStorage(taus, 0.9);
        using var dense = new DenseTaskVectorStorage(stack(taus));
        // Values (4 bytes) + int32 indices (4 bytes) for ~10 % of elements: ≈ 0.2 × dense; allow one element per task slack.
        Assert.That(sparse.Bytes, Is.LessThanOrEqualTo((long)(0.1 * dense.Bytes * 2) + (4 * 8)));
        Assert.That(sparse.Bytes, Is.GreaterThan((long)(0.09 * dense.Bytes * 2)));
        Assert.That(sparse.ElementCount, Is.EqualTo(2 * Enumerable.Range(0, 4).Sum(t => sparse.KeptCount(t))));
    }

    [Test]
    public void BatchedLinearDelta_EqualsNaivePerSampleComputation()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(3, [4, 5], seed: 24);
        using var sparse = new SparseTaskVectorStorage(taus, 0.5);
        var pruned = Enumerable.Range(0, 3).Select(sparse.ToDense).ToList();
        var generator = new Generator(25);
        var x = randn([2, 6, 5], generator: generator);
        var r = randn([2, 3], generator: generator);
        var expected = StorageTestData.NaiveLinearDelta(x, r, pruned);
        Assert.That(StorageTestData.MaxAbsDifference(sparse.BatchedLinearDelta(x, r), expected), Is.LessThan(1e-5f));
    }

    [Test]
    public void BatchedWeightedSum_EachRow_EqualsWeightedSumOfThatRow()
    {
        using var scope = NewDisposeScope();
        using var sparse = new SparseTaskVectorStorage(StorageTestData.RandomTaskVectors(3, [7], seed: 26), 0.4);
        var r = randn(3, 3, generator: new Generator(27));
        var batched = sparse.BatchedWeightedSum(r);
        for (int b = 0; b < 3; b++)
        {
            Assert.That(StorageTestData.MaxAbsDifference(batched[b], sparse.WeightedSum(r[b])), Is.LessThan(1e-6f));
        }
    }

    [Test]
    public void NamedBuffers_ContainValuesAndIndices()
    {
        using var scope = NewDisposeScope();
        using var sparse = new SparseTaskVectorStorage(StorageTestData.RandomTaskVectors(2, [3, 3], seed: 28), 0.5);
        Assert.That(sparse.named_buffers().Select(b => b.name), Is.EquivalentTo(new[] { "values", "indices" }));
        sparse.to(ScalarType.Float64);
        Assert.That(sparse.WeightedSum(tensor(new double[] { 1, 1 })).dtype, Is.EqualTo(ScalarType.Float64));
    }

    [Test]
    public void Quantile_ViaKthvalue_MatchesTorchQuantileFixture()
    {
        var path = Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "TaskVectors", "quantile_reference.json");
        using var document = JsonDocument.Parse(File.ReadAllText(path));
        int count = 0;
        foreach (var item in document.RootElement.EnumerateArray())
        {
            using var scope = NewDisposeScope();
            var values = tensor(item.GetProperty("values").EnumerateArray().Select(v => (float)v.GetDouble()).ToArray());
            double q = item.GetProperty("q").GetDouble();
            float expected = (float)item.GetProperty("expected").GetDouble();
            float actual = TensorQuantile.Quantile(values, q).item<float>();
            Assert.That(actual, Is.EqualTo(expected).Within(1e-6f), $"n = {values.numel()}, q = {q}");
            count++;
        }

        Assert.That(count, Is.GreaterThan(30));
    }
}
