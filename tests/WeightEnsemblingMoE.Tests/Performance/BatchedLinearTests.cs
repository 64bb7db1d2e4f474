using TorchSharp;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Performance;

/// <summary>The fast per-sample linear paths of the storages equal the simple per-sample merge (θ_0 + Σ r τ, then linear).</summary>
[TestFixture, NonParallelizable]
public sealed class BatchedLinearTests
{
    private const int Tasks = 3;
    private const int Out = 5;
    private const int In = 4;

    private static (Tensor X, Tensor R, Tensor W, Tensor Bias, Tensor[] Taus) Data(int batch = 2, int tokens = 3, int seed = 7)
    {
        using var generator = new Generator((ulong)seed);
        var x = randn(new long[] { batch, tokens, In }, ScalarType.Float64, generator: generator);
        var r = rand(new long[] { batch, Tasks }, ScalarType.Float64, generator: generator);
        var w = randn(new long[] { Out, In }, ScalarType.Float64, generator: generator);
        var bias = randn(new long[] { Out }, ScalarType.Float64, generator: generator);
        var taus = Enumerable.Range(0, Tasks).Select(_ => randn(new long[] { Out, In }, ScalarType.Float64, generator: generator)).ToArray();
        return (x, r, w, bias, taus);
    }

    /// <summary>The reference way: for each sample merge W + Σ_t r_t τ_t, then run the linear layer.</summary>
    private static Tensor Reference(Tensor x, Tensor r, Tensor? w, Tensor? bias, IReadOnlyList<Tensor> taus)
    {
        var outputs = new List<Tensor>();
        for (int b = 0; b < x.shape[0]; b++)
        {
            var merged = w is null ? zeros(Out, In, ScalarType.Float64) : w.clone();
            for (int t = 0; t < taus.Count; t++)
            {
                merged = merged + (r[b, t] * taus[t]);
            }

            outputs.Add(nn.functional.linear(x[b], merged, bias));
        }

        return stack(outputs, 0);
    }

    private static DenseLinearStrategy Strategy(bool allTasks) => allTasks ? DenseLinearStrategy.AllTasks : DenseLinearStrategy.Materialise;

    private static double MaxDifference(Tensor a, Tensor b) => (a - b).abs().max().item<double>();

    [TestCase(false)]
    [TestCase(true)]
    public void DenseBatchedLinear_WithEitherStrategy_EqualsPerSampleMerge(bool allTasks)
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = new DenseTaskVectorStorage(stack(taus, 0));

        var fast = storage.BatchedLinearCore(x, r, w, bias, Strategy(allTasks));

        Assert.That(MaxDifference(fast, Reference(x, r, w, bias, taus)), Is.LessThan(1e-12));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void DenseBatchedLinearCore_WithoutWeight_EqualsPerSampleDelta(bool allTasks)
    {
        using var scope = NewDisposeScope();
        var (x, r, _, _, taus) = Data();
        using var storage = new DenseTaskVectorStorage(stack(taus, 0));

        var fast = storage.BatchedLinearCore(x, r, null, null, Strategy(allTasks));

        Assert.That(MaxDifference(fast, Reference(x, r, null, null, taus)), Is.LessThan(1e-12));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void DenseBatchedLinear_RoutingGradient_EqualsPerSampleMergeGradient(bool allTasks)
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = new DenseTaskVectorStorage(stack(taus, 0));
        var rFast = r.clone().requires_grad_(true);
        var rReference = r.clone().requires_grad_(true);

        storage.BatchedLinearCore(x, rFast, w, bias, Strategy(allTasks)).square().sum().backward();
        Reference(x, rReference, w, bias, taus).square().sum().backward();

        Assert.That(MaxDifference(rFast.grad!, rReference.grad!), Is.LessThan(1e-10));
    }

    [Test]
    public void DenseBatchedLinear_PublicMethod_EqualsLinearPlusDelta()
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data(batch: 3, tokens: 50);
        using var storage = new DenseTaskVectorStorage(stack(taus, 0));

        var fused = storage.BatchedLinear(x, r, w, bias);
        var simple = nn.functional.linear(x, w, bias) + storage.BatchedLinearDelta(x, r);

        Assert.That(MaxDifference(fused, simple), Is.LessThan(1e-12));
    }

    [Test]
    public void DenseBatchedMergedWeights_WithBaseWeight_EqualsEachSampleMerge()
    {
        using var scope = NewDisposeScope();
        var (_, r, w, _, taus) = Data(batch: 4);
        using var storage = new DenseTaskVectorStorage(stack(taus, 0));

        var merged = storage.BatchedMergedWeights(r, w);

        for (int b = 0; b < 4; b++)
        {
            var expected = w + taus.Select((tau, t) => r[b, t] * tau).Aggregate((a, c) => a + c);
            Assert.That(MaxDifference(merged[b], expected), Is.LessThan(1e-12), $"sample {b}");
        }
    }

    [TestCase(50, false)]
    [TestCase(1, true)]
    public void DenseChooseStrategy_ForTokenCount_PicksCheaperFormula(int tokens, bool allTasks)
    {
        using var storage = new DenseTaskVectorStorage(zeros(8, 6, 4));

        Assert.That(storage.ChooseStrategy(16, tokens), Is.EqualTo(Strategy(allTasks)));
    }

    [Test]
    public void SparseBatchedLinear_WithPrunedTaskVectors_EqualsPerSampleMergeOfPrunedVectors()
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = new SparseTaskVectorStorage(taus, 0.5);
        var pruned = Enumerable.Range(0, Tasks).Select(storage.ToDense).ToArray();

        var fast = storage.BatchedLinear(x, r, w, bias);

        Assert.That(MaxDifference(fast, Reference(x, r, w, bias, pruned)), Is.LessThan(1e-12));
    }

    [Test]
    public void SparseBatchedLinear_RoutingGradient_EqualsPerSampleMergeGradient()
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = new SparseTaskVectorStorage(taus, 0.5);
        var pruned = Enumerable.Range(0, Tasks).Select(storage.ToDense).ToArray();
        var rFast = r.clone().requires_grad_(true);
        var rReference = r.clone().requires_grad_(true);

        storage.BatchedLinear(x, rFast, w, bias).square().sum().backward();
        Reference(x, rReference, w, bias, pruned).square().sum().backward();

        Assert.That(MaxDifference(rFast.grad!, rReference.grad!), Is.LessThan(1e-10));
    }

    [Test]
    public void SparseBatchedLinearDelta_WithPrunedTaskVectors_EqualsPerSampleDelta()
    {
        using var scope = NewDisposeScope();
        var (x, r, _, _, taus) = Data();
        using var storage = new SparseTaskVectorStorage(taus, 0.5);
        var pruned = Enumerable.Range(0, Tasks).Select(storage.ToDense).ToArray();

        var fast = storage.BatchedLinearDelta(x, r);

        Assert.That(MaxDifference(fast, Reference(x, r, null, null, pruned)), Is.LessThan(1e-12));
    }

    [Test]
    public void LowRankBatchedLinear_WithFactors_EqualsPerSampleMergeOfTruncatedVectors()
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = new LowRankTaskVectorStorage(taus, rank: 2, energyThreshold: null);
        var truncated = Enumerable.Range(0, Tasks).Select(storage.ToDense).ToArray();

        var fast = storage.BatchedLinear(x, r, w, bias);

        Assert.That(MaxDifference(fast, Reference(x, r, w, bias, truncated)), Is.LessThan(1e-12));
    }

    [Test]
    public void BatchedLinear_WithWrongWeightShape_ThrowsNamingWeight()
    {
        using var scope = NewDisposeScope();
        var (x, r, _, bias, taus) = Data();
        using var storage = new DenseTaskVectorStorage(stack(taus, 0));

        var exception = Assert.Throws<ArgumentException>(() => storage.BatchedLinear(x, r, zeros(In, Out, ScalarType.Float64), bias));

        Assert.That(exception!.ParamName, Is.EqualTo("weight"));
    }

    [Test]
    public void BatchedLinear_WithWrongBiasShape_ThrowsNamingBias()
    {
        using var scope = NewDisposeScope();
        var (x, r, w, _, taus) = Data();
        using var storage = new SparseTaskVectorStorage(taus, 0.5);

        var exception = Assert.Throws<ArgumentException>(() => storage.BatchedLinear(x, r, w, zeros(In, ScalarType.Float64)));

        Assert.That(exception!.ParamName, Is.EqualTo("bias"));
    }
}
