using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Models;

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
    public void Bytes_AreOneMinusPOfDensePlusOneBitPerElement()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(4, [32, 32], seed: 23);
        using var sparse = new SparseTaskVectorStorage(taus, 0.9);
        using var dense = new DenseTaskVectorStorage(stack(taus));
        long kept = Enumerable.Range(0, 4).Sum(t => sparse.KeptCount(t));
        // float32 values of the kept elements + a 1-bit mask per element (32 × 32 / 8 bytes per task): ≈ 0.1 + 1/32 of dense.
        Assert.That(sparse.Bytes, Is.EqualTo((kept * 4) + (4 * 32 * 32 / 8)));
        Assert.That(sparse.Bytes, Is.LessThanOrEqualTo((long)(0.15 * dense.Bytes)));
        Assert.That(sparse.ElementCount, Is.EqualTo(kept + (4 * 32 * 32 / 8)));
    }

    [Test]
    public void Mask_IsLsbFirstBitMaskOfKeptPositions()
    {
        using var scope = NewDisposeScope();
        // |τ| sorted: .01 .02 .03 .05 .1 .2 .3 3 4 5; 0.6-quantile at rank 5.4 → 0.24; kept: positions 1, 3, 4, 6 of 10
        // → byte 0 = 0b0101_1010 (bit i = position i), byte 1 = 0 (positions 8, 9 and six padding bits).
        var tau = tensor(new float[] { 0.1f, -5f, 0.2f, 3f, -0.3f, 0.05f, 4f, -0.01f, 0.02f, 0.03f });
        using var sparse = new SparseTaskVectorStorage([tau], 0.6);
        var buffers = sparse.named_buffers().ToDictionary(b => b.name, b => b.buffer);
        Assert.That(buffers["mask"].dtype, Is.EqualTo(ScalarType.Byte));
        Assert.That(buffers["mask"].shape, Is.EqualTo(new long[] { 1, 2 }));
        Assert.That(buffers["mask"].data<byte>().ToArray(), Is.EqualTo(new byte[] { 0b0101_1010, 0 }));
        Assert.That(buffers["values"].data<float>().ToArray(), Is.EqualTo(new float[] { -5f, 3f, -0.3f, 4f }));
    }

    [Test]
    public void StateDict_RoundTrip_IntoFreshStorage_GivesSameTaskVectors()
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(3, [9, 7], seed: 31);
        using var source = new SparseTaskVectorStorage(taus, 0.7);
        // Same kept counts per storage shape (quantile rule on other data keeps the same number): load and compare.
        using var target = new SparseTaskVectorStorage(StorageTestData.RandomTaskVectors(3, [9, 7], seed: 32), 0.7);
        var saved = StateDict.From(source);
        StateDict.LoadInto(target, saved);
        for (int t = 0; t < 3; t++)
        {
            Assert.That(target.KeptCount(t), Is.EqualTo(source.KeptCount(t)), $"task {t}");
            Assert.That(target.ToDense(t).eq(source.ToDense(t)).all().item<bool>(), Is.True, $"task {t}");
        }
    }

    [Test]
    public void LoadInto_LegacyValuesAndIndices_ThrowsNamingTheKeys()
    {
        using var scope = NewDisposeScope();
        using var sparse = new SparseTaskVectorStorage(StorageTestData.RandomTaskVectors(2, [4, 4], seed: 33), 0.5);
        var legacy = new Dictionary<string, Tensor>
        {
            ["values"] = zeros(16),
            ["indices"] = zeros(16, ScalarType.Int32),
        };
        var exception = Assert.Throws<StateDictLoadException>(() => StateDict.LoadInto(sparse, legacy));
        Assert.That(exception!.Message, Does.Contain("indices").And.Contain("mask"));
    }

    [TestCase(1L)]
    [TestCase(3L)]
    [TestCase(64L)]
    [TestCase(1000L)]
    public void Decode_AnyBlockSize_GivesBlockLocalIndicesOfEachKeptElement(long blockElements)
    {
        using var scope = NewDisposeScope();
        var taus = StorageTestData.RandomTaskVectors(2, [13, 11], seed: 34);
        using var sparse = new SparseTaskVectorStorage(taus, 0.6);
        var decoded = sparse.Decode(blockElements);
        for (int t = 0; t < 2; t++)
        {
            var expected = sparse.ToDense(t).reshape(-1).ne(0).nonzero().reshape(-1).data<long>().ToArray();
            var actual = new List<long>();
            for (int j = 0; j + 1 < decoded.Bounds[t].Length; j++)
            {
                var (_, i) = decoded.Part(zeros(decoded.Indices.numel()), t, j);
                actual.AddRange(i.numel() == 0 ? [] : i.data<long>().ToArray().Select(local => local + (j * blockElements)));
            }

            Assert.That(actual, Is.EqualTo(expected), $"task {t}");
        }
    }

    [TestCase(0L, 143L)]
    [TestCase(0L, 0L)]
    [TestCase(0L, 70L)]
    [TestCase(3L, 61L)]
    [TestCase(8L, 64L)]
    [TestCase(13L, 130L)]
    [TestCase(65L, 78L)]
    [TestCase(142L, 1L)]
    public void DenseRange_ManagedAndTensorOps_EqualToDenseSlicesExactly(long start, long length)
    {
        using var scope = NewDisposeScope();
        // 13 × 11 = 143 elements per task: the last mask byte has padding bits, ranges start and end mid-byte and mid-word.
        var taus = StorageTestData.RandomTaskVectors(3, [13, 11], seed: 35);
        using var sparse = new SparseTaskVectorStorage(taus, 0.6);
        var expected = stack(Enumerable.Range(0, 3).Select(sparse.ToDense).ToArray()).reshape(3, -1).narrow(1, start, length);
        foreach (bool managed in new[] { true, false })
        {
            var actual = sparse.DenseRange(start, length, managed);
            Assert.That(actual.shape, Is.EqualTo(new long[] { 3, length }));
            Assert.That(actual.eq(expected).all().item<bool>(), Is.True, $"managed = {managed}");
        }
    }

    [TestCase(ScalarType.Float64)]
    [TestCase(ScalarType.BFloat16)]
    public void DenseRange_OtherDtypes_ManagedEqualsTensorOps(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var sparse = new SparseTaskVectorStorage(StorageTestData.RandomTaskVectors(2, [9, 15], seed: 36), 0.7);
        sparse.to(dtype);
        var managed = sparse.DenseRange(5, 120, managed: true);
        Assert.That(managed.dtype, Is.EqualTo(dtype));
        Assert.That(managed.eq(sparse.DenseRange(5, 120, managed: false)).all().item<bool>(), Is.True);
        Assert.That(managed.eq(stack([sparse.ToDense(0), sparse.ToDense(1)]).reshape(2, -1).narrow(1, 5, 120)).all().item<bool>(), Is.True);
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
    public void NamedBuffers_ContainValuesAndMask()
    {
        using var scope = NewDisposeScope();
        using var sparse = new SparseTaskVectorStorage(StorageTestData.RandomTaskVectors(2, [3, 3], seed: 28), 0.5);
        Assert.That(sparse.named_buffers().Select(b => b.name), Is.EquivalentTo(new[] { "values", "mask" }));
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
