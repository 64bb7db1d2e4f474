using TorchSharp;
using static TorchSharp.torch;
using WeightEnsembling.TaskVectors;

namespace WeightEnsembling.Tests.TaskVectors;

[TestFixture, NonParallelizable]
public sealed class LowRankTaskVectorStorageTests
{
    [Test]
    public void ToDense_AtFullRank_EqualsDenseWithin1e5()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(2, [6, 4], seed: 31);
        using var storage = new LowRankTaskVectorStorage(taus, rank: 4, energyThreshold: null);
        for (int t = 0; t < 2; t++)
        {
            Assert.That(StorageTestData.MaxAbsDifference(storage.ToDense(t), taus[t]), Is.LessThan(1e-5f));
        }
    }

    [Test]
    public void ToDense_AtRankK_EqualsTruncatedSvdReconstruction()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(2, [6, 5], seed: 32);
        using var storage = new LowRankTaskVectorStorage(taus, rank: 2, energyThreshold: null);
        var (u, s, vh) = linalg.svd(taus[1].to(ScalarType.Float64), fullMatrices: false);
        var expected = u[.., ..2].matmul(diag(s[..2])).matmul(vh[..2]).to(ScalarType.Float32);
        Assert.That(StorageTestData.MaxAbsDifference(storage.ToDense(1), expected), Is.LessThan(1e-5f));
        Assert.That(storage.ElementCount, Is.EqualTo((2 * 2 * 6) + (2 * 2 * 5) + 4));
    }

    [Test]
    public void Ranks_ByEnergyThreshold_AreSmallestKeepingThatEnergy()
    {
        using var scope = NewDisposeScope();
        // Singular values 3, 2, 1: energies 9, 4, 1 of 14; 0.9 needs 13/14 → rank 2; 0.5 needs 9/14 → rank 1.
        var tau = diag(tensor(new float[] { 3, 2, 1 }));
        using var high = new LowRankTaskVectorStorage([tau], rank: null, energyThreshold: 0.9);
        using var low = new LowRankTaskVectorStorage([tau], rank: null, energyThreshold: 0.5);
        Assert.That(high.Ranks, Is.EqualTo(new[] { 2 }));
        Assert.That(low.Ranks, Is.EqualTo(new[] { 1 }));
    }

    [Test]
    public void BatchedLinearDelta_EqualsNaivePerSampleComputation()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(3, [4, 5], seed: 33);
        using var storage = new LowRankTaskVectorStorage(taus, rank: 2, energyThreshold: null);
        var truncated = Enumerable.Range(0, 3).Select(storage.ToDense).ToList();
        var generator = new Generator(34);
        var x = randn([2, 6, 5], generator: generator);
        var r = randn([2, 3], generator: generator);
        var expected = StorageTestData.NaiveLinearDelta(x, r, truncated);
        Assert.That(StorageTestData.MaxAbsDifference(storage.BatchedLinearDelta(x, r), expected), Is.LessThan(1e-5f));
    }

    [Test]
    public void BatchedWeightedSum_EachRow_EqualsWeightedSumOfThatRow()
    {
        using var scope = NewDisposeScope();
        using var storage = new LowRankTaskVectorStorage(StorageTestData.RandomTaskVectors(3, [4, 5], seed: 35), rank: 3, energyThreshold: null);
        var r = randn(2, 3, generator: new Generator(36));
        var batched = storage.BatchedWeightedSum(r);
        for (int b = 0; b < 2; b++)
        {
            Assert.That(StorageTestData.MaxAbsDifference(batched[b], storage.WeightedSum(r[b])), Is.LessThan(1e-5f));
        }
    }

    [Test]
    public void NamedBuffers_ContainFactors_AndToKeepsThemWorking()
    {
        using var scope = NewDisposeScope();
        using var storage = new LowRankTaskVectorStorage(StorageTestData.RandomTaskVectors(2, [3, 3], seed: 37), rank: 1, energyThreshold: null);
        Assert.That(storage.named_buffers().Select(b => b.name), Is.EquivalentTo(new[] { "u_s", "v", "rank_tasks" }));
        storage.to(ScalarType.Float64);
        Assert.That(storage.BatchedLinearDelta(ones(1, 2, 3, ScalarType.Float64), ones(1, 2, ScalarType.Float64)).dtype, Is.EqualTo(ScalarType.Float64));
    }

    [Test]
    public void Constructor_WithBothRankAndEnergy_ThrowsNamingOption()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => new LowRankTaskVectorStorage([zeros(2, 2)], rank: 1, energyThreshold: 0.5));
        Assert.That(ex!.Message, Does.Contain("Rank").And.Contain("EnergyThreshold"));
    }
}
