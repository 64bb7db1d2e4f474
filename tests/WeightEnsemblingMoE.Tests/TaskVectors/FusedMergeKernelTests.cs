using TorchSharp;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.TaskVectors;

/// <summary>
/// The managed fused merge (<see cref="FusedMergeKernel"/>) and the dense storage's per-sample linear paths built on it
/// (no-grad blocked path, and the custom autograd function <see cref="PerSampleLinearFunction"/>) against the simple
/// per-sample formula: for each sample b merge W + Σ_t R_bt τ_t with a loop of tensor ops, then <c>linear</c>. float64,
/// odd shapes (out not a multiple of the block rows, in not a multiple of the vector width, B = 1, T = 1), several blocks
/// (block size lowered through <see cref="TaskVectorStorage.BlockElementsForTests"/>), non-contiguous operands, and a dtype
/// the kernel does not handle (bfloat16 goes through libtorch's ops).
/// </summary>
[TestFixture, NonParallelizable]
public sealed class FusedMergeKernelTests
{
    [SetUp]
    public void SetUp() => TaskVectorStorage.ReleaseWorkspace();

    [TearDown]
    public void TearDown()
    {
        TaskVectorStorage.BlockElementsForTests = 0;
        TaskVectorStorage.ReleaseWorkspace();
    }

    private sealed record Case(Tensor X, Tensor R, Tensor W, Tensor Bias, Tensor[] Taus);

    private static Case Data(int batch, int tasks, int tokens, int outFeatures, int inFeatures, ScalarType dtype = ScalarType.Float64, int seed = 5)
    {
        using var generator = new Generator((ulong)seed);
        var x = randn(new long[] { batch, tokens, inFeatures }, dtype, generator: generator);
        var r = rand(new long[] { batch, tasks }, dtype, generator: generator);
        var w = randn(new long[] { outFeatures, inFeatures }, dtype, generator: generator) * 0.1;
        var bias = randn(new long[] { outFeatures }, dtype, generator: generator);
        var taus = Enumerable.Range(0, tasks).Select(_ => randn(new long[] { outFeatures, inFeatures }, dtype, generator: generator) * 0.05).ToArray();
        return new Case(x, r, w, bias, taus);
    }

    /// <summary>The simple formula: per sample, W + Σ_t r_bt τ_t by a loop of tensor ops, then <c>linear</c>; differentiable.</summary>
    private static Tensor Reference(Tensor x, Tensor r, Tensor? w, Tensor? bias, IReadOnlyList<Tensor> taus)
    {
        var outputs = new List<Tensor>();
        for (int b = 0; b < x.shape[0]; b++)
        {
            var merged = w is null ? zeros_like(taus[0]) : w.clone();
            for (int t = 0; t < taus.Count; t++)
            {
                merged = merged + (r[b, t] * taus[t]);
            }

            outputs.Add(nn.functional.linear(x[b], merged, bias));
        }

        return stack(outputs, 0);
    }

    private static double MaxDifference(Tensor a, Tensor b) => (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();

    // --- the kernel itself ---

    [TestCase(1, 1, 0L, 37L, true, 1)]
    [TestCase(3, 5, 13L, 1000L, true, 1)]
    [TestCase(4, 2, 7L, 1003L, false, 1)]
    [TestCase(5, 8, 3L, 70001L, true, 2)]
    [TestCase(2, 3, 1L, 40001L, false, 2)]
    public void Kernel_Write_EqualsWeightPlusRoutingTimesTaskVectors(int batch, int tasks, long start, long length, bool withWeight, int threads)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(3);
        long n = start + length + 11;
        var taus = randn(new long[] { tasks, n }, ScalarType.Float64, generator: generator);
        var r = randn(new long[] { batch, tasks }, ScalarType.Float64, generator: generator);
        var w = randn(new long[] { n }, ScalarType.Float64, generator: generator);
        var target = full(new long[] { batch, length }, double.NaN, ScalarType.Float64);

        var merge = FusedMergeKernel.Prepare(taus, r, withWeight ? w : null);
        merge.Threads = threads;
        merge.Write(target, start, length);

        var expected = r.matmul(taus.narrow(1, start, length));
        if (withWeight)
        {
            expected = expected + w.narrow(0, start, length);
        }

        Assert.That(MaxDifference(target, expected), Is.LessThan(1e-12));
    }

    [TestCase(1, 1, 0L, 5L)]
    [TestCase(3, 4, 9L, 1003L)]
    [TestCase(2, 8, 1L, 4099L)]
    public void Kernel_AddDots_AddsRowTimesTaskVectorProducts(int batch, int tasks, long start, long length)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(6);
        long n = start + length + 3;
        var taus = randn(new long[] { tasks, n }, ScalarType.Float64, generator: generator);
        var g = randn(new long[] { batch, length }, ScalarType.Float64, generator: generator);
        var sums = Enumerable.Range(0, batch * tasks).Select(i => (double)i).ToArray();

        var merge = FusedMergeKernel.Prepare(taus, zeros(batch, tasks, ScalarType.Float64), null);
        merge.AddDots(sums, g, start, length);

        var expected = g.matmul(taus.narrow(1, start, length).t()) + arange(batch * tasks, ScalarType.Float64).view(batch, tasks);
        Assert.That(MaxDifference(tensor(sums).view(batch, tasks), expected), Is.LessThan(1e-10));
    }

    [Test]
    public void Kernel_ParallelSplit_EqualsOneThreadBitForBit()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(4);
        const long n = 100_003;
        var taus = randn(new long[] { 8, n }, generator: generator);
        var r = rand(new long[] { 16, 8 }, generator: generator);
        var w = randn(new long[] { n }, generator: generator);
        var one = empty(16, n - 5);
        var two = empty(16, n - 5);

        var merge = FusedMergeKernel.Prepare(taus, r, w);
        merge.Threads = 1;
        merge.Write(one, 5, n - 5);
        merge.Threads = 2;
        merge.Write(two, 5, n - 5);

        Assert.That(one.eq(two).all().item<bool>(), Is.True);
    }

    [Test]
    public void Kernel_Handles_OnlyContiguousCpuFloat32AndFloat64()
    {
        using var scope = NewDisposeScope();
        Assert.That(FusedMergeKernel.Handles(zeros(2, 6)), Is.True);
        Assert.That(FusedMergeKernel.Handles(zeros(2, 6, ScalarType.Float64)), Is.True);
        Assert.That(FusedMergeKernel.Handles(zeros(2, 6, ScalarType.BFloat16)), Is.False);
        Assert.That(FusedMergeKernel.Handles(zeros(2, 6, ScalarType.Float16)), Is.False);
        Assert.That(FusedMergeKernel.Handles(zeros(6, 2).t()), Is.False);
    }

    [Test]
    public void Kernel_Prepare_WithRoutingOfAnotherDtype_ThrowsNamingRouting()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => FusedMergeKernel.Prepare(zeros(2, 6), zeros(3, 2, ScalarType.Float64), null));
        Assert.That(ex!.ParamName, Is.EqualTo("routing"));
    }

    // --- the dense storage's per-sample linear layer, no gradient (blocked, fused merge) ---

    [TestCase(3, 4, 5, 37, 19, true, 600)]      // several blocks of 10 rows, the last one partial (7 rows)
    [TestCase(1, 1, 20, 9, 3, true, 0)]         // B = 1, T = 1, in below one vector (N = 20: materialising beats running all tasks)
    [TestCase(2, 3, 8, 41, 35, false, 200)]     // delta only, blocks of 2 rows
    [TestCase(4, 8, 6, 13, 771, true, 0)]       // in not a multiple of 4 vectors, one block
    public void NoGrad_FusedPath_EqualsReference(int batch, int tasks, int tokens, int outFeatures, int inFeatures, bool withWeight, long blockElements)
    {
        using var scope = NewDisposeScope();
        TaskVectorStorage.BlockElementsForTests = blockElements;
        var c = Data(batch, tasks, tokens, outFeatures, inFeatures);
        using var storage = new DenseTaskVectorStorage(stack(c.Taus, 0));
        Assume.That(FusedMergeKernel.Handles(storage.TaskVectors), "needs hardware SIMD");

        Tensor fast;
        using (no_grad())
        {
            fast = withWeight ? storage.BatchedLinear(c.X, c.R, c.W, c.Bias) : storage.BatchedLinearDelta(c.X, c.R);
        }

        var expected = Reference(c.X, c.R, withWeight ? c.W : null, withWeight ? c.Bias : null, c.Taus);
        Assert.That(TaskVectorStorage.HasWorkspace, Is.True, "the blocked path uses the workspace");
        Assert.That(MaxDifference(fast, expected), Is.LessThan(1e-12));
    }

    [Test]
    public void NoGrad_NonContiguousOperands_EqualReference()
    {
        using var scope = NewDisposeScope();
        TaskVectorStorage.BlockElementsForTests = 300;
        var c = Data(3, 4, 5, 23, 17);
        var x = c.X.transpose(1, 2).contiguous().transpose(1, 2);
        var r = c.R.t().contiguous().t();
        var w = c.W.t().contiguous().t();
        Assert.That(x.is_contiguous() || r.is_contiguous() || w.is_contiguous(), Is.False);
        using var storage = new DenseTaskVectorStorage(stack(c.Taus, 0));

        Tensor fast;
        using (no_grad())
        {
            fast = storage.BatchedLinear(x, r, w, c.Bias);
        }

        Assert.That(MaxDifference(fast, Reference(c.X, c.R, c.W, c.Bias, c.Taus)), Is.LessThan(1e-12));
    }

    // --- with gradients: the custom autograd function ---

    [TestCase(3, 4, 5, 37, 19, true, true, 600)]
    [TestCase(1, 1, 20, 9, 3, true, true, 0)]
    [TestCase(2, 3, 8, 41, 35, false, true, 200)]
    [TestCase(4, 8, 6, 13, 771, true, false, 8000)]
    public void Autograd_FusedFunction_ValuesAndGradientsEqualReference(int batch, int tasks, int tokens, int outFeatures, int inFeatures, bool withWeight, bool inputNeedsGrad, long blockElements)
    {
        using var scope = NewDisposeScope();
        TaskVectorStorage.BlockElementsForTests = blockElements;
        var c = Data(batch, tasks, tokens, outFeatures, inFeatures);
        using var storage = new DenseTaskVectorStorage(stack(c.Taus, 0));
        using var generator = new Generator(9);
        var gy = randn(new long[] { batch, tokens, outFeatures }, ScalarType.Float64, generator: generator);
        var w = withWeight ? c.W : null;
        var bias = withWeight ? c.Bias : null;

        var x = c.X.clone().requires_grad_(inputNeedsGrad);
        var r = c.R.clone().requires_grad_(true);
        var fast = withWeight ? storage.BatchedLinear(x, r, w!, bias) : storage.BatchedLinearDelta(x, r);
        fast.mul(gy).sum().backward();
        Assert.That(TaskVectorStorage.HasWorkspace, Is.True, "the blocked autograd path uses the workspace");

        var xRef = c.X.clone().requires_grad_(true);
        var rRef = c.R.clone().requires_grad_(true);
        var expected = Reference(xRef, rRef, w, bias, c.Taus);
        expected.mul(gy).sum().backward();

        Assert.That(MaxDifference(fast.detach(), expected.detach()), Is.LessThan(1e-12));
        Assert.That(MaxDifference(r.grad!, rRef.grad!), Is.LessThan(1e-10));
        if (inputNeedsGrad)
        {
            Assert.That(MaxDifference(x.grad!, xRef.grad!), Is.LessThan(1e-12));
        }
        else
        {
            Assert.That(x.grad, Is.Null);
        }
    }

    [Test]
    public void Autograd_OnlyInputRequiresGrad_InputGradientEqualsReference()
    {
        using var scope = NewDisposeScope();
        TaskVectorStorage.BlockElementsForTests = 300;
        var c = Data(3, 4, 5, 23, 17);
        using var storage = new DenseTaskVectorStorage(stack(c.Taus, 0));
        var x = c.X.clone().requires_grad_(true);
        var fast = storage.BatchedLinear(x, c.R, c.W, c.Bias);
        fast.pow(2).sum().backward();
        Assert.That(TaskVectorStorage.HasWorkspace, Is.True, "the blocked autograd path uses the workspace");

        var xRef = c.X.clone().requires_grad_(true);
        Reference(xRef, c.R, c.W, c.Bias, c.Taus).pow(2).sum().backward();

        Assert.That(MaxDifference(x.grad!, xRef.grad!), Is.LessThan(1e-10));
    }

    [Test]
    public void Autograd_NonContiguousOperands_GradientsEqualReference()
    {
        using var scope = NewDisposeScope();
        TaskVectorStorage.BlockElementsForTests = 300;
        var c = Data(3, 4, 5, 23, 17);
        using var storage = new DenseTaskVectorStorage(stack(c.Taus, 0));
        var xLeaf = c.X.transpose(1, 2).contiguous().requires_grad_(true);
        var rLeaf = c.R.t().contiguous().requires_grad_(true);
        var w = c.W.t().contiguous().t();

        var fast = storage.BatchedLinear(xLeaf.transpose(1, 2), rLeaf.t(), w, c.Bias);
        fast.pow(2).sum().backward();

        var xRef = c.X.clone().requires_grad_(true);
        var rRef = c.R.clone().requires_grad_(true);
        var expected = Reference(xRef, rRef, c.W, c.Bias, c.Taus);
        expected.pow(2).sum().backward();

        Assert.That(MaxDifference(fast.detach(), expected.detach()), Is.LessThan(1e-12));
        Assert.That(MaxDifference(rLeaf.grad!.t(), rRef.grad!), Is.LessThan(1e-9));
        Assert.That(MaxDifference(xLeaf.grad!.transpose(1, 2), xRef.grad!), Is.LessThan(1e-10));
    }

    [Test]
    public void Autograd_CreateGraph_SecondOrderGradientEqualsReference()
    {
        using var scope = NewDisposeScope();
        TaskVectorStorage.BlockElementsForTests = 300;
        var c = Data(2, 3, 4, 11, 7);
        using var storage = new DenseTaskVectorStorage(stack(c.Taus, 0));

        Tensor SecondOrder(Func<Tensor, Tensor, Tensor> f)
        {
            var x = c.X.clone().requires_grad_(true);
            var r = c.R.clone().requires_grad_(true);
            var y = f(x, r);
            var gradR = autograd.grad([y.pow(2).sum()], [r], retain_graph: true, create_graph: true)[0];
            return autograd.grad([gradR.pow(2).sum()], [x])[0];
        }

        var fast = SecondOrder((x, r) => storage.BatchedLinear(x, r, c.W, c.Bias));
        var expected = SecondOrder((x, r) => Reference(x, r, c.W, c.Bias, c.Taus));

        Assert.That(MaxDifference(fast, expected), Is.LessThan(1e-9 * expected.abs().max().item<double>()));
    }

    [Test]
    public void Autograd_WeightRequiringGrad_FallsBackToMaterialisedPathWithWeightGradient()
    {
        using var scope = NewDisposeScope();
        var c = Data(2, 3, 4, 11, 7);
        using var storage = new DenseTaskVectorStorage(stack(c.Taus, 0));
        var w = c.W.clone().requires_grad_(true);
        var wRef = c.W.clone().requires_grad_(true);

        storage.BatchedLinear(c.X, c.R, w, c.Bias).sum().backward();
        Reference(c.X, c.R, wRef, c.Bias, c.Taus).sum().backward();

        Assert.That(TaskVectorStorage.HasWorkspace, Is.False, "the materialised path does not use the workspace");
        Assert.That(MaxDifference(w.grad!, wRef.grad!), Is.LessThan(1e-12));
    }

    [Test]
    public void Autograd_RepeatedSteps_KeepLiveTensorCount()
    {
        using var scope = NewDisposeScope();
        TaskVectorStorage.BlockElementsForTests = 300;
        var c = Data(3, 4, 5, 23, 17);
        using var storage = new DenseTaskVectorStorage(stack(c.Taus, 0));
        var r = c.R.clone().requires_grad_(true);
        void Step()
        {
            using var step = NewDisposeScope();
            storage.BatchedLinear(c.X, r, c.W, c.Bias).sum().backward();
        }

        Step();
        long live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++)
        {
            Step();
        }

        Assert.That(DisposeScopeManager.Statistics.ThreadTotalLiveCount, Is.EqualTo(live));
    }

    // --- a dtype the kernel does not handle ---

    [TestCase(false)]
    [TestCase(true)]
    public void BFloat16Storage_FallsBackToLibTorchOps_AndMatchesReference(bool withGradient)
    {
        using var scope = NewDisposeScope();
        TaskVectorStorage.BlockElementsForTests = 300;
        var c = Data(3, 4, 5, 23, 17, ScalarType.Float32);
        var taus16 = c.Taus.Select(t => t.to(ScalarType.BFloat16)).ToArray();
        using var storage = new DenseTaskVectorStorage(stack(taus16, 0));
        Assert.That(FusedMergeKernel.Handles(storage.TaskVectors), Is.False);

        var r = c.R.clone().requires_grad_(withGradient);
        Tensor fast;
        using (withGradient ? enable_grad() : no_grad())
        {
            fast = storage.BatchedLinear(c.X, r, c.W, c.Bias);
        }

        // Half-precision storages compute in the operands' dtype (float32) from the upcast bfloat16 task vectors.
        var expected = Reference(c.X, c.R, c.W, c.Bias, taus16.Select(t => t.to(ScalarType.Float32)).ToArray());
        Assert.That(fast.dtype, Is.EqualTo(ScalarType.Float32));
        Assert.That(MaxDifference(fast, expected), Is.LessThan(1e-4 * expected.abs().max().item<float>()));
        if (withGradient)
        {
            fast.sum().backward();
            Assert.That(r.grad, Is.Not.Null);
        }
    }
}
