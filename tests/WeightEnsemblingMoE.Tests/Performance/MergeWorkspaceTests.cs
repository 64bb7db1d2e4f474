using TorchSharp;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Performance;

/// <summary>
/// The no-gradient per-sample linear path (merged weights built block of output rows by block in a reused buffer) equals
/// the simple path (all B weight sets, autograd), keeps its memory across calls, and is not taken when gradients flow.
/// Shapes are chosen so that B·in·out spans several blocks with a partial last one (8 M elements per block). On a CPU with
/// AVX2 and FMA the dense and sparse float32 storages take the per-sample GEMM (<see cref="PerSampleGemmKernel"/>)
/// instead, which needs no workspace: <see cref="BlockedWorkspace"/> says whether they use one here.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class MergeWorkspaceTests
{
    [SetUp]
    public void ReleaseThreadWorkspace() => TaskVectorStorage.ReleaseWorkspace();

    private const int Tasks = 3, Batch = 16, Tokens = 50, In = 768, Out = 1500;

    private static (Tensor X, Tensor R, Tensor W, Tensor Bias, List<Tensor> Taus) Data(int seed = 11)
    {
        using var generator = new Generator((ulong)seed);
        var x = randn(new long[] { Batch, Tokens, In }, generator: generator);
        var r = rand(new long[] { Batch, Tasks }, generator: generator);
        var w = randn(new long[] { Out, In }, generator: generator) * 0.05;
        var bias = randn(new long[] { Out }, generator: generator);
        var taus = Enumerable.Range(0, Tasks).Select(_ => randn(new long[] { Out, In }, generator: generator) * 0.01).ToList();
        return (x, r, w, bias, taus);
    }

    /// <summary>Whether the no-grad path of <paramref name="kind"/> runs through the blocked workspace on this CPU.</summary>
    private static bool BlockedWorkspace(string kind) => kind is "dense" or "sparse" && !PerSampleGemmKernel.IsSupported;

    private static TaskVectorStorage Storage(string kind, List<Tensor> taus) =>
        kind == "dense" ? new DenseTaskVectorStorage(stack(taus, 0)) : new SparseTaskVectorStorage(taus, 0.8);

    /// <summary>The simple path: routing requires grad, so the storages build all B weight sets under autograd.</summary>
    private static Tensor Simple(TaskVectorStorage storage, Tensor x, Tensor r, Tensor? w, Tensor? bias) =>
        (w is null ? storage.BatchedLinearDelta(x, r.clone().requires_grad_(true)) : storage.BatchedLinear(x, r.clone().requires_grad_(true), w, bias)).detach();

    [TestCase("dense", true)]
    [TestCase("dense", false)]
    [TestCase("sparse", true)]
    [TestCase("sparse", false)]
    public void NoGrad_BlockedPath_EqualsSimplePath(string kind, bool withWeight)
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = Storage(kind, taus);
        Assert.That(storage.RowsPerBlockForTests(Batch), Is.LessThan(Out), "the shapes must span several blocks");
        var expected = Simple(storage, x, r, withWeight ? w : null, withWeight ? bias : null);

        Tensor fast;
        using (no_grad())
        {
            fast = withWeight ? storage.BatchedLinear(x, r, w, bias) : storage.BatchedLinearDelta(x, r);
        }

        Assert.That(TaskVectorStorage.HasWorkspace, Is.EqualTo(BlockedWorkspace(kind)));
        // Both float32, summed in different orders over 768 products: compare relative to the largest output.
        Assert.That((fast - expected).abs().max().item<float>(), Is.LessThan(1e-5f * expected.abs().max().item<float>()));
    }

    /// <summary>
    /// In-features not a multiple of 8 (769): the sparse storage's merge blocks start mid-byte of the mask. Reference:
    /// x_b·(W + Σ_t R_bt τ_t)ᵀ + b from the pruned task vectors of <see cref="SparseTaskVectorStorage.ToDense"/>
    /// (which decodes the mask by a managed bit scan and <c>index_add</c>, no block code), with and without gradients.
    /// </summary>
    [Test]
    public void Sparse_UnalignedBlocks_NoGradAndGradPaths_EqualReferenceFromToDense()
    {
        using var scope = NewDisposeScope();
        const long oddIn = 769;
        using var generator = new Generator(12);
        var x = randn(new long[] { Batch, 4, oddIn }, generator: generator);
        var r = rand(new long[] { Batch, Tasks }, generator: generator);
        var w = randn(new long[] { Out, oddIn }, generator: generator) * 0.05;
        var bias = randn(new long[] { Out }, generator: generator);
        var taus = Enumerable.Range(0, Tasks).Select(_ => randn(new long[] { Out, oddIn }, generator: generator) * 0.01).ToList();
        using var storage = new SparseTaskVectorStorage(taus, 0.9);
        long rowsPerBlock = storage.RowsPerBlockForTests(Batch);
        Assert.That(rowsPerBlock * oddIn % 8, Is.Not.EqualTo(0), "blocks must start mid-byte");
        Assert.That(rowsPerBlock, Is.LessThan(Out));

        // The reference in float64, so that the bound measures the fast paths' float32 rounding alone.
        var pruned = stack(Enumerable.Range(0, Tasks).Select(storage.ToDense).ToArray()).reshape(Tasks, -1).to(ScalarType.Float64);
        var (x64, r64) = (x.to(ScalarType.Float64), r.to(ScalarType.Float64));
        var merged = (w.to(ScalarType.Float64).reshape(1, -1) + r64.matmul(pruned)).view(Batch, Out, oddIn);
        var expected = (x64.bmm(merged.transpose(1, 2)) + bias.to(ScalarType.Float64)).to(ScalarType.Float32);
        var expectedDelta = x64.bmm(r64.matmul(pruned).view(Batch, Out, oddIn).transpose(1, 2)).to(ScalarType.Float32);

        Tensor fast, fastDelta;
        using (no_grad())
        {
            fast = storage.BatchedLinear(x, r, w, bias);
            fastDelta = storage.BatchedLinearDelta(x, r);
        }

        var rGrad = r.clone().requires_grad_(true);
        var slow = storage.BatchedLinear(x, rGrad, w, bias);
        Assert.That((fast - expected).abs().max().item<float>(), Is.LessThan(1e-5f));
        Assert.That((fastDelta - expectedDelta).abs().max().item<float>(), Is.LessThan(1e-5f));
        Assert.That((slow.detach() - expected).abs().max().item<float>(), Is.LessThan(1e-5f));
    }

    [TestCase("dense")]
    [TestCase("sparse")]
    public void NoGrad_RepeatedCalls_KeepLiveTensorCountAndWorkspace(string kind)
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = Storage(kind, taus);
        using var noGrad = no_grad();
        storage.BatchedLinear(x, r, w, bias).Dispose();
        long live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++)
        {
            storage.BatchedLinear(x, r, w, bias).Dispose();
        }

        Assert.That(DisposeScopeManager.Statistics.ThreadTotalLiveCount, Is.EqualTo(live));
        Assert.That(TaskVectorStorage.WorkspaceElementsForTests, Is.EqualTo(BlockedWorkspace(kind) ? storage.RowsPerBlockForTests(Batch) * Batch * In : 0));
    }

    [Test]
    public void ReleaseWorkspace_FreesTheBuffer_AndTheNextCallStillWorks()
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = Storage("dense", taus);
        using var noGrad = no_grad();
        var first = storage.BatchedLinear(x, r, w, bias);

        TaskVectorStorage.ReleaseWorkspace();
        Assert.That(TaskVectorStorage.HasWorkspace, Is.False);
        var second = storage.BatchedLinear(x, r, w, bias);

        Assert.That(second.eq(first).all().item<bool>(), Is.True);
    }

    [TestCase("dense")]
    [TestCase("sparse")]
    public void WithRoutingGradient_TakesTheAutogradPath_AndGradientMatchesReference(string kind)
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = Storage(kind, taus);
        var pruned = Enumerable.Range(0, Tasks).Select(storage.ToDense).ToList();
        var rFast = r.clone().requires_grad_(true);
        storage.BatchedLinear(x, rFast, w, bias).sum().backward();

        // Reference gradient: d/dr_bt Σ x_b (W + Σ r τ)ᵀ = Σ_n,o (x_b τ_tᵀ)_no.
        var expected = stack(pruned.Select(tau => nn.functional.linear(x, tau).sum([1L, 2L])).ToArray(), 1);
        // The dense storage's autograd path is PerSampleLinearFunction: its forward is the per-sample GEMM where the CPU
        // has AVX2 and FMA (no workspace; the backward needs one only for the input's gradient), the blocked merge
        // otherwise; the sparse storage's still builds all B weight sets.
        Assert.That(TaskVectorStorage.HasWorkspace, Is.EqualTo(kind == "dense" && !PerSampleGemmKernel.IsSupported));
        // float32 sums over N·out·in terms: compare relative to the largest gradient.
        Assert.That((rFast.grad! - expected).abs().max().item<float>(), Is.LessThan(1e-5f * expected.abs().max().item<float>()));
    }

    [Test]
    public void GradEnabled_NothingRequiresGrad_TakesTheInferencePath()
    {
        using var scope = NewDisposeScope();
        var (x, r, w, bias, taus) = Data();
        using var storage = Storage("dense", taus);

        var result = storage.BatchedLinear(x, r, w, bias);

        Assert.That(TaskVectorStorage.HasWorkspace, Is.EqualTo(BlockedWorkspace("dense")));
        Assert.That(result.requires_grad, Is.False);
    }
}
