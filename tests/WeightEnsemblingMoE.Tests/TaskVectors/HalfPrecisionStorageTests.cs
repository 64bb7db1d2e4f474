using TorchSharp;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.TaskVectors;

/// <summary>
/// Task vectors stored in float16 / bfloat16 (issue 19, item 4): stored in the 16-bit dtype, computed in float32. Two
/// checks per formula: exactly what upcasting the stored values and running the float32 storage gives (the same storage
/// converted with <c>to(Float32)</c>), and within the dtype's rounding of the float32 storage built from the same task
/// vectors.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class HalfPrecisionStorageTests
{
    private const long Out = 12, In = 10;

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
        {
            yield return new TestCaseData(TaskVectorStorageKind.Dense, dtype);
            yield return new TestCaseData(TaskVectorStorageKind.Sparse, dtype);
            yield return new TestCaseData(TaskVectorStorageKind.LowRank, dtype);
        }
    }

    private static TaskVectorStorageOptions Options(TaskVectorStorageKind kind, ScalarType dtype)
    {
        var options = kind switch
        {
            TaskVectorStorageKind.Dense => TaskVectorStorageOptions.Dense(),
            TaskVectorStorageKind.Sparse => TaskVectorStorageOptions.Sparse(0.5),
            _ => TaskVectorStorageOptions.LowRank(4),
        };
        options.DType = dtype;
        return options;
    }

    /// <summary>The unit roundoff of a 16-bit dtype (round to nearest: relative error at most this).</summary>
    private static double UnitRoundoff(ScalarType dtype) => dtype == ScalarType.Float16 ? Math.Pow(2, -11) : Math.Pow(2, -8);

    private static TaskVectorDictionary Build(TaskVectorStorageOptions options, int seed = 7)
    {
        var generator = new Generator((ulong)seed);
        var pretrained = new Dictionary<string, Tensor> { ["fc.weight"] = randn([Out, In], generator: generator), ["fc.bias"] = randn([Out], generator: generator) };
        var experts = Enumerable.Range(0, 3)
            .Select(_ => (IReadOnlyDictionary<string, Tensor>)pretrained.ToDictionary(p => p.Key, p => p.Value + randn(p.Value.shape, generator: generator)))
            .ToList();
        return TaskVectorDictionary.Create(pretrained, experts, options);
    }

    private static bool BitEqual(Tensor a, Tensor b) => a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [TestCaseSource(nameof(Cases))]
    public void HalfStorage_HoldsValuesInDType_AndBytesAreTheBuffersBytes(TaskVectorStorageKind kind, ScalarType dtype)
    {
        using var half = Build(Options(kind, dtype));
        using var full = Build(Options(kind, ScalarType.Float32));
        var storage = half["fc.weight"];
        var floating = storage.buffers().Where(b => b.is_floating_point()).ToList();
        Assert.That(floating, Is.Not.Empty);
        Assert.That(floating.All(b => b.dtype == dtype), Is.True, "every stored floating buffer is in the storage dtype");
        Assert.That(storage.Bytes, Is.EqualTo(storage.buffers().Sum(b => b.numel() * b.ElementSize)));
        long floatingBytes = full["fc.weight"].buffers().Where(b => b.is_floating_point()).Sum(b => b.numel() * b.ElementSize);
        Assert.That(full["fc.weight"].Bytes - storage.Bytes, Is.EqualTo(floatingBytes / 2), "the values' bytes halve, the rest (mask, rank_tasks) stays");
        if (kind == TaskVectorStorageKind.Dense)
        {
            Assert.That(half.Bytes * 2, Is.EqualTo(full.Bytes));
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void HalfStorage_Computes_ExactlyAsUpcastValuesInFloat32(TaskVectorStorageKind kind, ScalarType dtype)
    {
        // Bit-equality with the float32 storage's libtorch formula; the float32 storage's managed kernel (a different
        // summation order) is checked against it within rounding by FusedMergeKernelTests and at the end of this test.
        using var libtorchOnly = new LibTorchMergeOnly();
        using var half = Build(Options(kind, dtype));
        using var upcast = Build(Options(kind, dtype));
        upcast.to(ScalarType.Float32);
        var h = half["fc.weight"];
        var f = upcast["fc.weight"];
        Assert.That(f.buffers().Where(b => b.is_floating_point()).All(b => b.dtype == ScalarType.Float32), Is.True);
        using var scope = NewDisposeScope();
        var generator = new Generator(3);
        var x = randn([2, 5, In], generator: generator);
        var r = rand([2, 3], generator: generator);
        var w = randn([Out, In], generator: generator);
        var b = randn([Out], generator: generator);

        Assert.That(BitEqual(h.WeightedSum(r[0]), f.WeightedSum(r[0])), Is.True, "WeightedSum");
        Assert.That(BitEqual(h.BatchedWeightedSum(r), f.BatchedWeightedSum(r)), Is.True, "BatchedWeightedSum");
        Assert.That(BitEqual(h.BatchedLinearDelta(x, r), f.BatchedLinearDelta(x, r)), Is.True, "BatchedLinearDelta");
        Assert.That(BitEqual(h.BatchedLinear(x, r, w, b), f.BatchedLinear(x, r, w, b)), Is.True, "BatchedLinear");
        using (no_grad())
        {
            Assert.That(BitEqual(h.BatchedLinear(x, r, w, b), f.BatchedLinear(x, r, w, b)), Is.True, "BatchedLinear, blocked (no grad)");
            Assert.That(BitEqual(h.BatchedLinearDelta(x, r), f.BatchedLinearDelta(x, r)), Is.True, "BatchedLinearDelta, blocked (no grad)");
        }

        // 50 tokens: the dense storage materialises the merged weights instead of running every task on every token.
        var many = randn([2, 50, In], generator: generator);
        Assert.That(BitEqual(h.BatchedLinear(many, r, w, b), f.BatchedLinear(many, r, w, b)), Is.True, "BatchedLinear, 50 tokens");
        using (no_grad())
        {
            Assert.That(BitEqual(h.BatchedLinear(many, r, w, b), f.BatchedLinear(many, r, w, b)), Is.True, "BatchedLinear, 50 tokens, blocked");
            Assert.That(BitEqual(h.BatchedLinearDelta(many, r), f.BatchedLinearDelta(many, r)), Is.True, "BatchedLinearDelta, 50 tokens, blocked");
        }

        for (int t = 0; t < 3; t++)
        {
            Assert.That(BitEqual(h.ToDense(t), f.ToDense(t)), Is.True, $"ToDense({t})");
        }

        Assert.That(BitEqual(half["fc.bias"].BatchedWeightedSum(r), upcast["fc.bias"].BatchedWeightedSum(r)), Is.True, "bias");
    }

    [TestCaseSource(nameof(Cases))]
    public void HalfStorage_AgreesWithFloat32Storage_WithinTheDTypesRounding(TaskVectorStorageKind kind, ScalarType dtype)
    {
        using var half = Build(Options(kind, dtype));
        using var full = Build(Options(kind, ScalarType.Float32));
        var h = half["fc.weight"];
        var f = full["fc.weight"];
        double u = UnitRoundoff(dtype);
        using var scope = NewDisposeScope();
        for (int t = 0; t < 3; t++)
        {
            var exact = f.ToDense(t);
            var rounded = h.ToDense(t);
            Assert.That(rounded.dtype, Is.EqualTo(ScalarType.Float32));
            // Dense and sparse: each value rounded once (|δ| ≤ u|τ|). Low rank: US·Vᵀ of rounded factors, ≤ (2u + u²)·|US|·|V|ᵀ.
            var bound = kind == TaskVectorStorageKind.LowRank
                ? LowRankMagnitude(f, t) * (2.01 * u) + 1e-6
                : exact.abs() * u;
            Assert.That((rounded - exact).abs().le(bound).all().item<bool>(), Is.True, $"ToDense({t}) beyond {dtype} rounding");
            Assert.That((rounded - exact).abs().max().item<float>(), Is.GreaterThan(0f), "the values were not rounded at all");
        }

        var generator = new Generator(5);
        var x = randn([2, 4, In], generator: generator);
        var r = rand([2, 3], generator: generator);
        var denseFull = stack(Enumerable.Range(0, 3).Select(f.ToDense));
        var magnitude = stack(Enumerable.Range(0, 3).Select(t => kind == TaskVectorStorageKind.LowRank ? LowRankMagnitude(f, t) : f.ToDense(t).abs()));
        // |Σ_t r_bt δ_t| ≤ 2.01u Σ_t r_bt M_t, then through x: ≤ |x|·(that)ᵀ; plus float32 arithmetic (1e-4 relative).
        var deltaBound = r.matmul(magnitude.view(3, -1)).view(2, Out, In) * (2.01 * u);
        var outputBound = x.abs().bmm(deltaBound.transpose(1, 2)) + (x.abs().bmm(r.matmul(denseFull.abs().view(3, -1)).view(2, Out, In).transpose(1, 2)) * 1e-4);
        var difference = (h.BatchedLinearDelta(x, r) - f.BatchedLinearDelta(x, r)).abs();
        Assert.That(difference.le(outputBound).all().item<bool>(), Is.True, "BatchedLinearDelta beyond the dtype's rounding");
    }

    private static Tensor LowRankMagnitude(TaskVectorStorage storage, int task)
    {
        var buffers = storage.named_buffers().ToDictionary(p => p.name, p => p.buffer);
        var ranks = ((LowRankTaskVectorStorage)storage).Ranks;
        long start = ranks.Take(task).Sum(k => (long)k);
        return buffers["u_s"].narrow(1, start, ranks[task]).abs().matmul(buffers["v"].narrow(1, start, ranks[task]).abs().t());
    }

    [TestCase(ScalarType.Float16)]
    [TestCase(ScalarType.BFloat16)]
    public void HalfDense_ManyColumns_UpcastsBlockByBlock_SameAsUpcastStorage(ScalarType dtype)
    {
        // 2 × 2.2 M elements: more than StoredPrecision.BlockElements, so WeightedSum runs two upcast blocks.
        using var scope = NewDisposeScope();
        var generator = new Generator(11);
        var stored = randn([2, 1100, 2000], generator: generator).to(dtype);
        Assert.That(stored.numel(), Is.GreaterThan(StoredPrecision.BlockElements));
        using var half = new DenseTaskVectorStorage(stored);
        using var full = new DenseTaskVectorStorage(stored.to(ScalarType.Float32));
        var r = tensor(new float[] { 0.3f, -0.7f });
        Assert.That(BitEqual(half.WeightedSum(r), full.WeightedSum(r)), Is.True);
        var batched = tensor(new float[] { 0.3f, -0.7f, 1.5f, 0.25f }, [2, 2]);
        Assert.That(BitEqual(half.BatchedWeightedSum(batched), full.BatchedWeightedSum(batched)), Is.True);
    }

    private static IEnumerable<TestCaseData> GradientCases() =>
        Cases().SelectMany(c => new[] { 5, 50 }.Select(tokens => new TestCaseData(c.Arguments[0], c.Arguments[1], tokens)));

    [TestCaseSource(nameof(GradientCases))]
    public void HalfStorage_RoutingGradient_FlowsAndEqualsUpcastStorages(TaskVectorStorageKind kind, ScalarType dtype, int tokens)
    {
        using var libtorchOnly = new LibTorchMergeOnly();
        using var half = Build(Options(kind, dtype));
        using var upcast = Build(Options(kind, dtype));
        upcast.to(ScalarType.Float32);
        using var scope = NewDisposeScope();
        var generator = new Generator(9);
        var x = randn([2, tokens, In], generator: generator);
        var w = randn([Out, In], generator: generator);
        var b = randn([Out], generator: generator);
        var target = randn([2, tokens, Out], generator: generator);
        Tensor Gradient(TaskVectorStorage storage)
        {
            var r = rand([2, 3], generator: new Generator(4)).requires_grad_();
            var loss = (storage.BatchedLinear(x, r, w, b) - target).square().sum();
            loss.backward();
            return r.grad!.clone();
        }

        var gradient = Gradient(half["fc.weight"]);
        Assert.That(gradient.abs().sum().item<float>(), Is.GreaterThan(0f));
        Assert.That(BitEqual(gradient, Gradient(upcast["fc.weight"])), Is.True);
    }

    [TestCase(ScalarType.Int32)]
    [TestCase(ScalarType.Float64)]
    [TestCase(ScalarType.Int8)]
    public void Validate_NonStorageDType_ThrowsNamingDType(ScalarType dtype)
    {
        var e = Assert.Throws<ArgumentException>(() => new TaskVectorStorageOptions { DType = dtype }.Validate());
        Assert.That(e!.ParamName, Is.EqualTo(nameof(TaskVectorStorageOptions.DType)));
        Assert.That(e.Message, Does.Contain("DType").And.Contain(dtype.ToString()));
    }

    [Test]
    public void Create_Int32DType_Throws()
    {
        var e = Assert.Throws<ArgumentException>(() => Build(new TaskVectorStorageOptions { DType = ScalarType.Int32 }).Dispose());
        Assert.That(e!.Message, Does.Contain("DType"));
    }

    [Test]
    public void ModelUpscalerOptionsClone_CopiesTheStorageOptions()
    {
        var sparse = TaskVectorStorageOptions.Sparse(0.8);
        var options = new ModelUpscalerOptions { TaskVectorStorage = sparse };
        var clone = options.Clone();
        Assert.That(clone.TaskVectorStorage, Is.Not.SameAs(sparse));
        clone.TaskVectorStorage.DType = ScalarType.BFloat16;
        Assert.That(sparse.DType, Is.EqualTo(ScalarType.Float32));
    }

    [TestCase(ScalarType.Float16)]
    [TestCase(ScalarType.BFloat16)]
    public void HalfStorage_AgreesWithTheFusedFloat32KernelWithinRounding(ScalarType dtype)
    {
        using var half = Build(Options(TaskVectorStorageKind.Dense, dtype));
        using var upcast = Build(Options(TaskVectorStorageKind.Dense, dtype));
        upcast.to(ScalarType.Float32);
        using var scope = NewDisposeScope();
        var generator = new Generator(5);
        var many = randn([2, 50, In], generator: generator);
        var r = rand([2, 3], generator: generator);
        var w = randn([Out, In], generator: generator);
        var b = randn([Out], generator: generator);
        using var noGrad = no_grad();
        Assert.That(FusedMergeKernel.Handles(((DenseTaskVectorStorage)upcast["fc.weight"]).TaskVectors), Is.True);

        var fused = upcast["fc.weight"].BatchedLinear(many, r, w, b);
        var libtorch = half["fc.weight"].BatchedLinear(many, r, w, b);

        Assert.That((fused - libtorch).abs().max().item<float>(), Is.LessThan(1e-5f * libtorch.abs().max().item<float>()));
    }

    /// <summary>
    /// Routes every storage through libtorch's ops (no managed merge kernel, no per-sample GEMM) until disposed; tests run
    /// one at a time.
    /// </summary>
    private sealed class LibTorchMergeOnly : IDisposable
    {
        private readonly bool _was = FusedMergeKernel.Enabled;
        private readonly bool _gemm = PerSampleGemmKernel.Enabled;

        public LibTorchMergeOnly()
        {
            FusedMergeKernel.Enabled = false;
            PerSampleGemmKernel.Enabled = false;
        }

        public void Dispose()
        {
            FusedMergeKernel.Enabled = _was;
            PerSampleGemmKernel.Enabled = _gemm;
        }
    }
}
