using TorchSharp;
using WeightEnsembling.Moe;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Moe;

[TestFixture, NonParallelizable]
public sealed class WeightEnsemblingMoETests
{
    private const int Hidden = 4;
    private const int Intermediate = 6;
    private const int Tasks = 2;

    private static Dictionary<string, Tensor> Pretrained() => MoeReference.GetAll("pretrained.");

    private static List<Dictionary<string, Tensor>> Experts()
        => [.. Enumerable.Range(0, Tasks).Select(t => MoeReference.GetAll($"expert{t}."))];

    private static WeightEnsemblingMoE Build(nn.Module<Tensor, Tensor> gate, bool ownsGate = true, int? layerIndex = null)
        => new(
            new TinyMlp(Hidden, Intermediate).Load(Pretrained()),
            TaskVectorDictionary.Create(Pretrained(), Experts(), TaskVectorStorageOptions.Dense()),
            gate,
            ownsGate,
            layerIndex);

    /// <summary>θ_0 + Σ_t r_t (θ_t − θ_0), computed directly from the reference tensors.</summary>
    private static TinyMlp MergedMlp(params float[] routing)
    {
        var pretrained = Pretrained();
        var experts = Experts();
        var merged = pretrained.ToDictionary(
            p => p.Key,
            p => Enumerable.Range(0, Tasks).Aggregate(p.Value, (sum, t) => sum + routing[t] * (experts[t][p.Key] - p.Value)));
        return new TinyMlp(Hidden, Intermediate).Load(merged);
    }

    private static Router ReferenceRouter(WeightEnsemblingMoE moe, Router router)
    {
        // FusionBench keys (gate.fc1.weight, ...) load into our module unchanged.
        using var noGrad = no_grad();
        var state = moe.state_dict();
        foreach (var (key, value) in MoeReference.GetAll("gate."))
        {
            state["gate." + key].copy_(value);
        }

        return router;
    }

    private static WeightEnsemblingMoE BuildWithReferenceRouter()
    {
        var router = Router.Create(2, Hidden, Tasks, 0.3, seed: 1);
        var moe = Build(router);
        ReferenceRouter(moe, router);
        return moe;
    }

    [Test]
    public void Forward_PerSample_MatchesPyTorchReference()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        var output = moe.call(MoeReference.Get("input"));
        Assert.That(output.allclose(MoeReference.Get("output.per_sample"), rtol: 0, atol: 1e-5), Is.True);
        Assert.That(moe.LastRoutingWeights!.allclose(MoeReference.Get("routing"), rtol: 0, atol: 1e-6), Is.True);
    }

    [Test]
    public void Forward_BatchReduce_MatchesPyTorchReference()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        moe.RoutingMode = RoutingMode.BatchReduce;
        var output = moe.call(MoeReference.Get("input"));
        Assert.That(output.allclose(MoeReference.Get("output.batch_reduce"), rtol: 0, atol: 1e-5), Is.True);
    }

    [Test]
    public void Forward_RoutingModeSwitch_ChangesOutputForTwoDifferentSamples()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        var input = MoeReference.Get("input");
        var perSample = moe.call(input);
        moe.RoutingMode = RoutingMode.BatchReduce;
        var reduced = moe.call(input);
        moe.RoutingMode = RoutingMode.PerSample;
        var again = moe.call(input);
        Assert.That((perSample - reduced).abs().max().item<float>(), Is.GreaterThan(1e-4f));
        Assert.That(again.allclose(perSample, rtol: 0, atol: 0), Is.True);
    }

    [Test]
    public void Forward_ConstantRouter_EqualsTaskArithmetic()
    {
        using var scope = NewDisposeScope();
        var router = Router.Create(2, Hidden, Tasks, 0.3, seed: 5);
        using var moe = Build(router);
        using (no_grad())
        {
            moe.state_dict()["gate.fc2.weight"].zero_();
        }

        var input = randn(3, 5, Hidden);
        using var expected = MergedMlp(0.3f, 0.3f);
        Assert.That(moe.call(input).allclose(expected.call(input), rtol: 0, atol: 1e-5), Is.True);
    }

    [Test]
    public void Forward_PerSampleBatch_EqualsOneSampleAtATime()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(2024);
        var router = Router.Create(1, Hidden, Tasks, 0.3, seed: 5);
        using var moe = Build(router);
        using (no_grad())
        {
            moe.state_dict()["gate.fc.weight"].normal_(0, 0.5, generator);
        }

        var input = randn(4, 3, Hidden, generator: generator);
        var batched = moe.call(input);
        var single = cat(Enumerable.Range(0, 4).Select(b => moe.call(input[b..(b + 1)])).ToArray(), 0);
        Assert.That((batched - single).abs().max().item<float>(), Is.LessThan(1e-5f));
        Assert.That(moe.LastRoutingWeights!.shape, Is.EqualTo(new long[] { 1, Tasks }));
    }

    [TestCase(TaskVectorStorageKind.Sparse)]
    [TestCase(TaskVectorStorageKind.LowRank)]
    public void Forward_CompressedStorage_PerSampleEqualsMergeOfEachSample(TaskVectorStorageKind kind)
    {
        using var scope = NewDisposeScope();
        var options = kind == TaskVectorStorageKind.Sparse ? TaskVectorStorageOptions.Sparse(0.5) : TaskVectorStorageOptions.LowRank(2);
        using var moe = new WeightEnsemblingMoE(
            new TinyMlp(Hidden, Intermediate).Load(Pretrained()),
            TaskVectorDictionary.Create(Pretrained(), Experts(), options),
            Router.Create(2, Hidden, Tasks, 0.3, seed: 1));
        ReferenceRouter(moe, (Router)moe.Gate);
        var input = MoeReference.Get("input");
        var output = moe.call(input);
        var routing = moe.LastRoutingWeights!.clone();
        for (int b = 0; b < 2; b++)
        {
            using var merged = new TinyMlp(Hidden, Intermediate).Load(moe.MergedWeights(routing[b]));
            Assert.That(merged.call(input[b..(b + 1)]).allclose(output[b..(b + 1)], rtol: 0, atol: 1e-5), Is.True, $"sample {b}");
        }
    }

    [Test]
    public void Forward_DepthZeroRouter_EqualsStaticMerge()
    {
        using var scope = NewDisposeScope();
        var router = Router.Create(0, Hidden, Tasks, 0.3, seed: 1);
        using var moe = Build(router);
        using (no_grad())
        {
            moe.state_dict()["gate.weight"].copy_(tensor(new float[] { 0.7f, -0.2f }));
        }

        var input = randn(2, 3, Hidden);
        using var expected = MergedMlp(0.7f, -0.2f);
        Assert.That(moe.call(input).allclose(expected.call(input), rtol: 0, atol: 1e-5), Is.True);
    }

    [Test]
    public void MergedWeights_BatchMeanRouting_ReproducesBatchReduceOutput()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        moe.RoutingMode = RoutingMode.BatchReduce;
        var input = MoeReference.Get("input");
        var output = moe.call(input);
        var merged = moe.MergedWeights(moe.LastRoutingWeights!.mean([0L]));
        using var unloaded = new TinyMlp(Hidden, Intermediate).Load(merged);
        Assert.That(merged.Keys, Is.EquivalentTo(new[] { "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias" }));
        Assert.That(unloaded.call(input).allclose(output, rtol: 0, atol: 1e-5), Is.True);
    }

    [Test]
    public void MergedWeights_NaNRouting_ThrowsNamingRouting()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        var exception = Assert.Throws<ArgumentException>(() => moe.MergedWeights(tensor(new[] { float.NaN, 0f })));
        Assert.That(exception!.ParamName, Is.EqualTo("routing"));
    }

    [Test]
    public void Constructor_FreezesEverythingButTheRouter()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        var trainable = moe.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToArray();
        Assert.That(trainable, Is.EquivalentTo(new[] { "gate.fc1.weight", "gate.fc1.bias", "gate.fc2.weight", "gate.fc2.bias" }));
        Assert.That(moe.buffers().All(b => !b.requires_grad), Is.True);
    }

    [Test]
    public void StateDict_HasGateBaseModelAndTaskVectorKeys()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        var keys = moe.state_dict().Keys.ToArray();
        Assert.That(keys, Is.SupersetOf(new[]
        {
            "gate.fc1.weight", "gate.fc1.bias", "gate.fc2.weight", "gate.fc2.bias",
            "base_model.fc1.weight", "base_model.fc1.bias", "base_model.fc2.weight", "base_model.fc2.bias",
        }));
        Assert.That(keys.Count(k => k.StartsWith("task_vectors.fc1_weight.", StringComparison.Ordinal)), Is.GreaterThan(0));
        Assert.That(keys.Count(k => k.StartsWith("task_vectors.fc2_bias.", StringComparison.Ordinal)), Is.GreaterThan(0));
    }

    [Test]
    public void Backward_PerSample_GradientsReachRouterOnly()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        var input = MoeReference.Get("input");
        moe.call(input).pow(2).sum().backward();
        foreach (var (name, parameter) in moe.named_parameters())
        {
            var grad = parameter.grad;
            if (name.StartsWith("gate.", StringComparison.Ordinal))
            {
                Assert.That(grad, Is.Not.Null, name);
                Assert.That(grad!.abs().sum().item<float>(), Is.GreaterThan(0f), name);
            }
            else
            {
                Assert.That(grad, Is.Null, name);
            }
        }

        Assert.That(input.requires_grad, Is.False);
    }

    [Test]
    public void LastRoutingWeights_IsDetachedCopyReplacedOnEachForward()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        Assert.That(moe.LastRoutingWeights, Is.Null);
        moe.call(randn(3, 2, Hidden));
        var first = moe.LastRoutingWeights!;
        Assert.That(first.shape, Is.EqualTo(new long[] { 3, Tasks }));
        Assert.That(first.requires_grad, Is.False);
        moe.call(randn(1, 2, Hidden));
        Assert.That(first.IsInvalid, Is.True, "the previous routing weights are disposed when replaced");
        Assert.That(moe.LastRoutingWeights!.shape, Is.EqualTo(new long[] { 1, Tasks }));
    }

    [Test]
    public void Constructor_RouterWidthDiffersFromTaskCount_ThrowsNamingWidths()
    {
        using var scope = NewDisposeScope();
        using var router = Router.Create(2, Hidden, taskCount: 3, 0.3, seed: 1);
        var exception = Assert.Throws<ArgumentException>(() => Build(router));
        Assert.That(exception!.ParamName, Is.EqualTo("gate"));
        Assert.That(exception.Message, Does.Contain("3 routing weights").And.Contain("2 tasks"));
    }

    [Test]
    public void Constructor_CustomRouterWithWrongWidth_ThrowsNamingShapes()
    {
        using var scope = NewDisposeScope();
        using var router = nn.Linear(Hidden, 3);
        var exception = Assert.Throws<ArgumentException>(() => Build(router));
        Assert.That(exception!.ParamName, Is.EqualTo("gate"));
        Assert.That(exception.Message, Does.Contain("[1, 1, 3]"));
    }

    [Test]
    public void Forward_CustomRouterModule_RoutesWithItsMeanOutput()
    {
        using var scope = NewDisposeScope();
        var router = nn.Linear(Hidden, Tasks);
        using var moe = Build(router);
        var input = randn(2, 3, Hidden);
        moe.call(input);
        using (no_grad())
        {
            Assert.That(moe.LastRoutingWeights!.allclose(router.call(input).mean([1L]), rtol: 0, atol: 1e-6), Is.True);
        }
    }

    [Test]
    public void Constructor_MissingTaskVectorForLayer_ThrowsNamingTensor()
    {
        using var scope = NewDisposeScope();
        static Dictionary<string, Tensor> Fc1Only(Dictionary<string, Tensor> all)
            => all.Where(p => p.Key.StartsWith("fc1.", StringComparison.Ordinal)).ToDictionary(p => p.Key, p => p.Value);
        using var taskVectors = TaskVectorDictionary.Create(
            Fc1Only(Pretrained()), Experts().Select(Fc1Only).ToList(), TaskVectorStorageOptions.Dense());
        using var router = Router.Create(2, Hidden, Tasks, 0.3, seed: 1);
        using var mlp = new TinyMlp(Hidden, Intermediate);
        var exception = Assert.Throws<ArgumentException>(() => new WeightEnsemblingMoE(mlp, taskVectors, router));
        Assert.That(exception!.Message, Does.Contain("'fc2.weight'"));
    }

    [Test]
    public void Constructor_TaskVectorShapeMismatch_ThrowsNamingTensor()
    {
        using var scope = NewDisposeScope();
        using var router = Router.Create(2, Hidden, Tasks, 0.3, seed: 1);
        using var mlp = new TinyMlp(Hidden, Intermediate + 1);
        using var taskVectors = TaskVectorDictionary.Create(Pretrained(), Experts(), TaskVectorStorageOptions.Dense());
        var exception = Assert.Throws<ArgumentException>(() => new WeightEnsemblingMoE(mlp, taskVectors, router));
        Assert.That(exception!.Message, Does.Contain("'fc1.weight'").And.Contain("[6, 4]"));
    }

    [Test]
    public void Forward_WrongInputWidth_ThrowsNamingExpectedShape()
    {
        using var scope = NewDisposeScope();
        using var moe = BuildWithReferenceRouter();
        var exception = Assert.Throws<ArgumentException>(() => moe.call(randn(2, 3, Hidden + 1)));
        Assert.That(exception!.Message, Does.Contain("[B, N, 4]"));
    }
}
