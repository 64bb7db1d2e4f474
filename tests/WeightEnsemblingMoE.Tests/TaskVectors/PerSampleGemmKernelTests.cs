using TorchSharp;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.TaskVectors;

/// <summary>
/// The float32 per-sample GEMM whose panel packing does the merge (<see cref="PerSampleGemmKernel"/>), through the dense
/// storage's per-sample linear layer, against the simple formula computed in float64 (per sample: W + Σ_t R_bt τ_t by a
/// loop of tensor ops, then <c>linear</c>). Shapes chosen to reach every edge of the kernel: a last panel narrower than
/// 16 outputs, token counts that leave 1–5 rows after the 6-row micro-kernels, batches that leave 1–3 samples after the
/// groups of 4 merged together, inputs longer than one depth block with a partial last block, and T large enough to
/// shrink the depth block.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class PerSampleGemmKernelTests
{
    [SetUp]
    public void SetUp() => Assume.That(PerSampleGemmKernel.IsSupported, "needs an x86 CPU with AVX2 and FMA");

    [TearDown]
    public void TearDown()
    {
        PerSampleGemmKernel.Enabled = true;
        FusedMergeKernel.MaxThreads = 0;
    }

    private sealed record Case(Tensor X, Tensor R, Tensor W, Tensor Bias, Tensor Taus);

    private static Case Data(int batch, int tasks, int tokens, int outFeatures, int inFeatures, int seed = 7)
    {
        using var generator = new Generator((ulong)seed);
        var x = randn(new long[] { batch, tokens, inFeatures }, ScalarType.Float32, generator: generator);
        var r = randn(new long[] { batch, tasks }, ScalarType.Float32, generator: generator);
        var w = randn(new long[] { outFeatures, inFeatures }, ScalarType.Float32, generator: generator) * 0.1;
        var bias = randn(new long[] { outFeatures }, ScalarType.Float32, generator: generator);
        var taus = randn(new long[] { tasks, outFeatures, inFeatures }, ScalarType.Float32, generator: generator) * 0.05;
        return new Case(x, r, w, bias, taus);
    }

    /// <summary>The simple formula in float64 from the float32 operands; differentiable.</summary>
    private static Tensor Reference(Tensor x, Tensor r, Tensor? w, Tensor? bias, Tensor taus)
    {
        var outputs = new List<Tensor>();
        var tau64 = taus.to(ScalarType.Float64);
        for (int b = 0; b < x.shape[0]; b++)
        {
            var merged = w is null ? zeros_like(tau64[0]) : w.to(ScalarType.Float64);
            for (int t = 0; t < taus.shape[0]; t++)
            {
                merged = merged + (r[b, t].to(ScalarType.Float64) * tau64[t]);
            }

            outputs.Add(nn.functional.linear(x[b].to(ScalarType.Float64), merged, bias?.to(ScalarType.Float64)));
        }

        return stack(outputs, 0);
    }

    /// <summary>Largest |a − b| relative to the largest |b| (float32 accumulation over a few hundred products).</summary>
    private static double RelativeDifference(Tensor a, Tensor b)
    {
        var b64 = b.to(ScalarType.Float64);
        return (a.to(ScalarType.Float64) - b64).abs().max().item<double>() / Math.Max(1e-30, b64.abs().max().item<double>());
    }

    [TestCase(1, 1, 20, 1, 1, true)]         // a 1-wide panel, one input, one sample (20 tokens: the per-sample path)
    [TestCase(5, 3, 7, 45, 37, true)]        // last panel 13 wide, 1 row after the 6-row kernel, 1 sample after a group of 4
    [TestCase(9, 8, 13, 32, 700, true)]      // depth blocks 256 + 256 + 188 (T = 8), two full groups of 4 and one sample
    [TestCase(7, 20, 6, 17, 300, false)]     // T = 20 shrinks the depth block to 144; no W, no bias; 3 samples after a group
    [TestCase(4, 2, 50, 64, 24, true)]       // the ViT token count: 5 micro-kernels of 6 rows and 4 of 5
    [TestCase(2, 3, 8, 20, 40, true)]        // 6 + 2 rows (the 2-row kernel)
    [TestCase(2, 3, 9, 20, 40, true)]        // 6 + 3 rows
    [TestCase(2, 3, 4, 20, 40, true)]        // 4 rows only
    [TestCase(2, 3, 16, 20, 40, true)]       // 6 + 5 + 5 rows
    [TestCase(3, 2, 11, 29, 40, true)]       // 6 + 5 rows, both through the 13-wide edge panel
    public void NoGrad_EqualsFloat64Reference(int batch, int tasks, int tokens, int outFeatures, int inFeatures, bool withWeight)
    {
        using var scope = NewDisposeScope();
        var c = Data(batch, tasks, tokens, outFeatures, inFeatures);
        using var storage = new DenseTaskVectorStorage(c.Taus);

        Tensor fast;
        using (no_grad())
        {
            fast = withWeight ? storage.BatchedLinear(c.X, c.R, c.W, c.Bias) : storage.BatchedLinearDelta(c.X, c.R);
        }

        var expected = Reference(c.X, c.R, withWeight ? c.W : null, withWeight ? c.Bias : null, c.Taus);
        Assert.That(fast.dtype, Is.EqualTo(ScalarType.Float32));
        Assert.That(fast.shape, Is.EqualTo(new long[] { batch, tokens, outFeatures }));
        Assert.That(RelativeDifference(fast, expected), Is.LessThan(2e-6));
    }

    [Test]
    public void NoGrad_KernelAndBlockedPath_Agree()
    {
        using var scope = NewDisposeScope();
        var c = Data(6, 4, 11, 40, 300);
        using var storage = new DenseTaskVectorStorage(c.Taus);
        using var guard = no_grad();
        var kernel = storage.BatchedLinear(c.X, c.R, c.W, c.Bias);
        PerSampleGemmKernel.Enabled = false;
        var blocked = storage.BatchedLinear(c.X, c.R, c.W, c.Bias);
        Assert.That(RelativeDifference(kernel, blocked), Is.LessThan(2e-6));
        Assert.That(RelativeDifference(kernel, blocked), Is.GreaterThan(0), "the two paths accumulate in different orders; equal bits would mean one path ran twice");
    }

    [Test]
    public void NoGrad_OneAndTwoThreads_EqualBitForBit()
    {
        using var scope = NewDisposeScope();
        var c = Data(5, 3, 9, 70, 260);
        using var storage = new DenseTaskVectorStorage(c.Taus);
        using var guard = no_grad();
        FusedMergeKernel.MaxThreads = 1;
        var one = storage.BatchedLinear(c.X, c.R, c.W, c.Bias);
        FusedMergeKernel.MaxThreads = 2;
        var two = storage.BatchedLinear(c.X, c.R, c.W, c.Bias);
        Assert.That(one.eq(two).all().item<bool>(), Is.True, "each output is computed by one thread in the same order");
    }

    [Test]
    public void NoGrad_OpenMPTeamAndThreadPool_EqualBitForBit()
    {
        using var scope = NewDisposeScope();
        var c = Data(5, 3, 50, 70, 260);
        using var storage = new DenseTaskVectorStorage(c.Taus);
        using var guard = no_grad();
        FusedMergeKernel.MaxThreads = 2;
        var team = storage.BatchedLinear(c.X, c.R, c.W, c.Bias);
        WeightEnsembling.Interop.OpenMPTeam.Enabled = false;
        try
        {
            var pool = storage.BatchedLinear(c.X, c.R, c.W, c.Bias);
            Assert.That(team.eq(pool).all().item<bool>(), Is.True);
        }
        finally
        {
            WeightEnsembling.Interop.OpenMPTeam.Enabled = true;
        }
    }

    [TestCase(1L)]             // one depth block per super-block: depth-block-major order
    [TestCase(4L * 50 * 4 * 300)] // super-blocks of two depth blocks of 144 (T = 20), the last one partial
    public void NoGrad_SuperBlockSize_DoesNotChangeABit(long superBlockBytes)
    {
        using var scope = NewDisposeScope();
        var c = Data(4, 20, 50, 40, 700);
        using var dense = new DenseTaskVectorStorage(c.Taus);
        using var sparse = new SparseTaskVectorStorage(Enumerable.Range(0, 20).Select(t => c.Taus[t]).ToList(), 0.7);
        using var guard = no_grad();
        FusedMergeKernel.MaxThreads = 2;
        var denseWhole = dense.BatchedLinear(c.X, c.R, c.W, c.Bias);
        var sparseWhole = sparse.BatchedLinear(c.X, c.R, c.W, c.Bias);
        long saved = PerSampleGemmKernel.SuperBlockBytes;
        PerSampleGemmKernel.SuperBlockBytes = superBlockBytes;
        try
        {
            Assert.That(dense.BatchedLinear(c.X, c.R, c.W, c.Bias).eq(denseWhole).all().item<bool>(), Is.True, "dense");
            Assert.That(sparse.BatchedLinear(c.X, c.R, c.W, c.Bias).eq(sparseWhole).all().item<bool>(), Is.True, "sparse (row cursors across super-blocks)");
        }
        finally
        {
            PerSampleGemmKernel.SuperBlockBytes = saved;
        }
    }

    [Test]
    public void NoGrad_NonContiguousOperands_EqualReference()
    {
        using var scope = NewDisposeScope();
        var c = Data(3, 4, 5, 23, 17);
        var x = c.X.transpose(1, 2).contiguous().transpose(1, 2);
        var r = c.R.t().contiguous().t();
        var w = c.W.t().contiguous().t();
        Assert.That(x.is_contiguous() || r.is_contiguous() || w.is_contiguous(), Is.False);
        using var storage = new DenseTaskVectorStorage(c.Taus);

        Tensor fast;
        using (no_grad())
        {
            fast = storage.BatchedLinear(x, r, w, c.Bias);
        }

        Assert.That(RelativeDifference(fast, Reference(c.X, c.R, c.W, c.Bias, c.Taus)), Is.LessThan(2e-6));
    }

    [TestCase(5, 3, 7, 45, 37, true)]
    [TestCase(4, 8, 13, 33, 520, false)]
    public void Autograd_ValuesAndRoutingGradientsEqualFloat64Reference(int batch, int tasks, int tokens, int outFeatures, int inFeatures, bool inputNeedsGrad)
    {
        using var scope = NewDisposeScope();
        var c = Data(batch, tasks, tokens, outFeatures, inFeatures);
        using var storage = new DenseTaskVectorStorage(c.Taus);
        using var generator = new Generator(11);
        var gy = randn(new long[] { batch, tokens, outFeatures }, ScalarType.Float32, generator: generator);

        var x = c.X.clone().requires_grad_(inputNeedsGrad);
        var r = c.R.clone().requires_grad_(true);
        var fast = storage.BatchedLinear(x, r, c.W, c.Bias);
        fast.mul(gy).sum().backward();

        var xRef = c.X.to(ScalarType.Float64).requires_grad_(true);
        var rRef = c.R.to(ScalarType.Float64).requires_grad_(true);
        var expected = Reference(xRef, rRef, c.W, c.Bias, c.Taus);
        expected.mul(gy.to(ScalarType.Float64)).sum().backward();

        Assert.That(RelativeDifference(fast.detach(), expected.detach()), Is.LessThan(2e-6));
        Assert.That(RelativeDifference(r.grad!, rRef.grad!), Is.LessThan(1e-5));
        if (inputNeedsGrad)
        {
            Assert.That(RelativeDifference(x.grad!, xRef.grad!), Is.LessThan(1e-5));
        }
    }

    // --- the sparse storage: its panels decoded from the mask ---

    [TestCase(5, 3, 7, 45, 37, 0.7, true)]     // rows of 37 bits: every row after the first starts mid-byte
    [TestCase(9, 8, 13, 32, 700, 0.9, true)]   // three depth blocks per row, groups of 4 and a single sample
    [TestCase(3, 2, 20, 19, 64, 0.0, false)]   // p = 0 keeps everything (equals dense); no W, no bias
    public void Sparse_NoGrad_EqualsFloat64ReferenceFromToDense(int batch, int tasks, int tokens, int outFeatures, int inFeatures, double sparsity, bool withWeight)
    {
        using var scope = NewDisposeScope();
        var c = Data(batch, tasks, tokens, outFeatures, inFeatures);
        using var storage = new SparseTaskVectorStorage(Enumerable.Range(0, tasks).Select(t => c.Taus[t]).ToArray(), sparsity);
        var pruned = stack(Enumerable.Range(0, tasks).Select(storage.ToDense).ToArray(), 0);

        Tensor fast;
        using (no_grad())
        {
            fast = withWeight ? storage.BatchedLinear(c.X, c.R, c.W, c.Bias) : storage.BatchedLinearDelta(c.X, c.R);
        }

        var expected = Reference(c.X, c.R, withWeight ? c.W : null, withWeight ? c.Bias : null, pruned);
        Assert.That(RelativeDifference(fast, expected), Is.LessThan(2e-6));
    }

    [Test]
    public void Sparse_KernelAndBlockedPath_Agree_AndRepeatedCallsEqualBitForBit()
    {
        using var scope = NewDisposeScope();
        var c = Data(6, 4, 11, 40, 300);
        using var storage = new SparseTaskVectorStorage(Enumerable.Range(0, 4).Select(t => c.Taus[t]).ToArray(), 0.8);
        using var guard = no_grad();
        FusedMergeKernel.MaxThreads = 2;
        var kernel = storage.BatchedLinear(c.X, c.R, c.W, c.Bias);
        var again = storage.BatchedLinear(c.X, c.R, c.W, c.Bias);
        PerSampleGemmKernel.Enabled = false;
        var blocked = storage.BatchedLinear(c.X, c.R, c.W, c.Bias);
        Assert.That(again.eq(kernel).all().item<bool>(), Is.True, "the value cursors start afresh on every call");
        Assert.That(RelativeDifference(kernel, blocked), Is.LessThan(2e-6));
        Assert.That(RelativeDifference(kernel, blocked), Is.GreaterThan(0), "the two paths accumulate in different orders");
    }
}
