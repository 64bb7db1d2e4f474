using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Merging;
using WeightEnsembling.Moe;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Upscaling;

[TestFixture, NonParallelizable]
public sealed class ModelUpscalerTests
{
    private ClipVisionModel pretrained = null!;
    private ClipVisionModel[] experts = null!;

    [SetUp]
    public void SetUp()
    {
        pretrained = TinyClip.Pretrained();
        experts = [TinyClip.Expert(pretrained, 11), TinyClip.Expert(pretrained, 12), TinyClip.Expert(pretrained, 13)];
    }

    [TearDown]
    public void TearDown()
    {
        pretrained.Dispose();
        foreach (var expert in experts)
        {
            expert.Dispose();
        }
    }

    [Test]
    public void Upcycle_Defaults_OnlyRouterParametersRequireGrad()
    {
        using var upscaled = Upscaler.Upcycle(pretrained, experts);
        var trainable = upscaled.Model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();
        Assert.That(trainable, Is.Not.Empty);
        Assert.That(trainable, Has.All.Contains(".mlp.gate."));
        // Two layers, each a 2-layer router: fc1.weight, fc1.bias, fc2.weight, fc2.bias.
        Assert.That(trainable, Has.Count.EqualTo(8));
        Assert.That(upscaled.TrainableParameters(), Has.Count.EqualTo(8));
    }

    [Test]
    public void Upcycle_Defaults_StateDictKeysFollowFusionBench()
    {
        using var upscaled = Upscaler.Upcycle(pretrained, experts);
        var keys = upscaled.Model.state_dict().Keys.ToHashSet();
        Assert.That(keys, Does.Contain("vision_model.encoder.layers.0.mlp.gate.fc1.weight"));
        Assert.That(keys, Does.Contain("vision_model.encoder.layers.1.mlp.gate.fc2.bias"));
        Assert.That(keys, Does.Contain("vision_model.encoder.layers.0.mlp.base_model.fc1.weight"));
        Assert.That(keys, Does.Contain("vision_model.encoder.layers.0.self_attn.q_proj.weight"));
        Assert.That(keys.Where(k => k.StartsWith("vision_model.encoder.layers.0.mlp.task_vectors.")), Is.Not.Empty);
        Assert.That(keys, Does.Not.Contain("vision_model.encoder.layers.0.mlp.fc1.weight"));
    }

    [TestCase(0, new[] { "gate.weight" })]
    [TestCase(1, new[] { "gate.fc.weight", "gate.fc.bias" })]
    [TestCase(2, new[] { "gate.fc1.weight", "gate.fc1.bias", "gate.fc2.weight", "gate.fc2.bias" })]
    public void Build_EachRouterDepth_MlpKeysAreExactlyFusionBenchGateBaseModelAndTaskVectors(int depth, string[] gateKeys)
    {
        using var upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).WithRouterDepth(depth).Build();
        const string prefix = "vision_model.encoder.layers.0.mlp.";
        var keys = upscaled.Model.state_dict().Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).Select(k => k[prefix.Length..]).ToList();
        string[] expected =
        [
            .. gateKeys,
            "base_model.fc1.weight", "base_model.fc1.bias", "base_model.fc2.weight", "base_model.fc2.bias",
            "task_vectors.fc1_weight.task_vectors", "task_vectors.fc1_bias.task_vectors",
            "task_vectors.fc2_weight.task_vectors", "task_vectors.fc2_bias.task_vectors",
        ];
        Assert.That(keys, Is.EquivalentTo(expected));
        var routerKeys = upscaled.RouterStateDict().Keys.ToList();
        Assert.That(routerKeys, Is.EquivalentTo(gateKeys.Select(k => prefix + k).Concat(gateKeys.Select(k => "vision_model.encoder.layers.1.mlp." + k))));
    }

    [Test]
    public void Build_RoutersForcedToConstantLambda_EqualsTaskArithmeticModel()
    {
        using var upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).WithInitLambda(0.3).Build();
        ZeroLastRouterLayers(upscaled);
        using var merged = TinyClip.WithWeights(StateDictMerging.TaskArithmetic(pretrained.state_dict(), experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.state_dict()).ToList(), 0.3));
        using var images = TinyClip.Images(4, 5);
        using var expected = merged.forward(images);
        using var actual = upscaled.Forward(images);
        Assert.That(TinyClip.MaxDifference(actual.LastHiddenState, expected.LastHiddenState), Is.LessThan(1e-5));
        Assert.That(TinyClip.MaxDifference(actual.ImageEmbeds!, expected.ImageEmbeds!), Is.LessThan(1e-5));
    }

    [Test]
    public void Build_PretrainedProjection_KeepsTheta0ProjectionAndMergesTheRest()
    {
        using var kept = ModelUpscaler.For(pretrained).WithExperts(experts).WithPretrainedProjection().Build();
        using var merged = ModelUpscaler.For(pretrained).WithExperts(experts).Build();
        const string projection = "visual_projection.weight";
        var theta0 = pretrained.state_dict()[projection];
        var taskArithmetic = StateDictMerging.TaskArithmetic(pretrained.state_dict(), experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.state_dict()).ToList(), 0.3);
        Assert.That(TinyClip.BitEqual(kept.Model.state_dict()[projection], theta0), Is.True, "FusionBench's recipe: the heads read θ_0's projection");
        Assert.That(TinyClip.MaxDifference(merged.Model.state_dict()[projection], taskArithmetic[projection]), Is.LessThan(1e-6));
        Assert.That(TinyClip.MaxDifference(merged.Model.state_dict()[projection], theta0), Is.GreaterThan(1e-4), "the experts' projections differ from θ_0's");
        const string attention = "vision_model.encoder.layers.0.self_attn.q_proj.weight";
        Assert.That(TinyClip.BitEqual(kept.Model.state_dict()[attention], merged.Model.state_dict()[attention]), Is.True);
        Assert.That(kept.Describe().PretrainedProjection, Is.True);
        Assert.That(kept.Describe().DifferencesFrom(merged.Describe()), Has.Some.Contains("pre-trained projection"));
    }

    [Test]
    public void Build_AttentionTarget_ConstantRoutersEqualTaskArithmeticModel()
    {
        using var upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).WithTargets(UpscaleTargets.MlpAndAttention).Build();
        Assert.That(upscaled.Modules.Select(m => m.Path), Does.Contain("vision_model.encoder.layers.1.self_attn"));
        ZeroLastRouterLayers(upscaled);
        using var merged = TinyClip.WithWeights(StateDictMerging.TaskArithmetic(pretrained.state_dict(), experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.state_dict()).ToList(), 0.3));
        using var images = TinyClip.Images(3, 6);
        using var expected = merged.forward(images);
        using var actual = upscaled.Forward(images);
        Assert.That(TinyClip.MaxDifference(actual.PooledOutput, expected.PooledOutput), Is.LessThan(1e-5));
    }

    [Test]
    public void Forward_PerSampleRouting_EqualsEachSampleAlone()
    {
        using var upscaled = Upscaler.Upcycle(pretrained, experts);
        RandomiseRouters(upscaled, 3);
        using var images = TinyClip.Images(4, 7);
        using var batched = upscaled.Forward(images);
        for (int b = 0; b < 4; b++)
        {
            using var single = upscaled.Forward(images[TensorIndex.Slice(b, b + 1)]);
            Assert.That(TinyClip.MaxDifference(single.LastHiddenState, batched.LastHiddenState[TensorIndex.Slice(b, b + 1)]), Is.LessThan(1e-5), $"sample {b}");
        }
    }

    [Test]
    public void RoutingMode_SetOnModel_SwitchesEveryModuleAndChangesOutputs()
    {
        using var upscaled = Upscaler.Upcycle(pretrained, experts);
        RandomiseRouters(upscaled, 4);
        using var images = TinyClip.Images(2, 8);
        upscaled.RoutingMode = RoutingMode.PerSample;
        using var perSample = upscaled.Forward(images);
        upscaled.RoutingMode = RoutingMode.BatchReduce;
        Assert.That(upscaled.Modules.Select(m => m.Module.RoutingMode), Has.All.EqualTo(RoutingMode.BatchReduce));
        using var reduced = upscaled.Forward(images);
        Assert.That(TinyClip.MaxDifference(perSample.LastHiddenState, reduced.LastHiddenState), Is.GreaterThan(1e-4));
    }

    [Test]
    public void MergeAndUnload_ZeroLayerRouters_EqualsUpscaledOutput()
    {
        using var upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).WithRouterDepth(0).Build();
        RandomiseRouters(upscaled, 5);
        using var plain = upscaled.MergeAndUnload();
        Assert.That(plain.state_dict().Keys.Any(k => k.Contains(".gate.")), Is.False);
        using var images = TinyClip.Images(3, 9);
        using var expected = upscaled.Forward(images);
        using var actual = plain.forward(images);
        Assert.That(TinyClip.MaxDifference(actual.ImageEmbeds!, expected.ImageEmbeds!), Is.LessThan(1e-5));
    }

    [Test]
    public void MergeAndUnload_FixedRouting_EqualsUpscaledOutputWithConstantRouters()
    {
        using var upscaled = Upscaler.Upcycle(pretrained, experts);
        ZeroLastRouterLayers(upscaled);
        using var routing = tensor(new float[] { 0.3f, 0.3f, 0.3f });
        using var plain = upscaled.MergeAndUnload(routing);
        using var images = TinyClip.Images(2, 10);
        using var expected = upscaled.Forward(images);
        using var actual = plain.forward(images);
        Assert.That(TinyClip.MaxDifference(actual.LastHiddenState, expected.LastHiddenState), Is.LessThan(1e-5));
    }

    [Test]
    public void MergeAndUnload_InputDependentRoutersWithoutRouting_Throws()
    {
        using var upscaled = Upscaler.Upcycle(pretrained, experts);
        Assert.That(() => upscaled.MergeAndUnload(), Throws.InvalidOperationException.With.Message.Contains("routing"));
    }

    [Test]
    public void Build_ExpertFolders_EqualsExpertsInMemory()
    {
        string root = Path.Combine(Path.GetTempPath(), "wemoe-upscaler-" + Guid.NewGuid().ToString("N"));
        try
        {
            pretrained.SaveTo(Path.Combine(root, "pretrained"));
            var folders = experts.Select((e, i) => { string f = Path.Combine(root, $"expert{i}"); e.SaveTo(f); return f; }).ToList();
            using var fromMemory = ModelUpscaler.For(pretrained).WithExperts(experts).WithSeed(7).Build();
            using var fromFolders = ModelUpscaler.ForFolder(Path.Combine(root, "pretrained")).WithExpertFolders(folders).WithSeed(7).Build();
            using var images = TinyClip.Images(3, 11);
            using var a = fromMemory.Forward(images);
            using var b = fromFolders.Forward(images);
            Assert.That(TinyClip.MaxDifference(a.LastHiddenState, b.LastHiddenState), Is.EqualTo(0.0));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void Build_DoesNotModifyInputs()
    {
        var before = pretrained.state_dict().ToDictionary(p => p.Key, p => p.Value.clone());
        var expertBefore = experts[0].state_dict().ToDictionary(p => p.Key, p => p.Value.clone());
        using (var upscaled = Upscaler.Upcycle(pretrained, experts))
        {
            using var images = TinyClip.Images(2, 12);
            using var _ = upscaled.Forward(images);
        }

        foreach (var (name, tensor) in pretrained.state_dict())
        {
            Assert.That(tensor.eq(before[name]).all().item<bool>(), Is.True, name);
        }

        foreach (var (name, tensor) in experts[0].state_dict())
        {
            Assert.That(tensor.eq(expertBefore[name]).all().item<bool>(), Is.True, name);
        }
    }

    [Test]
    public void Build_SharedRouterWithPositionEncoding_OneRouterSeenOnce()
    {
        using var upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).WithSharedRouter(positionEncoding: true).Build();
        Assert.That(upscaled.TrainableParameters(), Has.Count.EqualTo(4));
        var gate = (Router)upscaled.Modules[0].Module.Gate;
        Assert.That(upscaled.Modules.Select(m => m.Module.Gate), Has.All.SameAs(gate));
        Assert.That(gate.InputDimension, Is.EqualTo(16 + Router.PositionEncodingDimension));
        using var images = TinyClip.Images(2, 13);
        using var output = upscaled.Forward(images);
        Assert.That(output.LastHiddenState.isfinite().all().item<bool>(), Is.True);
    }

    [Test]
    public void Build_SparseStorage_UsesFewerBytesAndRuns()
    {
        using var dense = Upscaler.Upcycle(pretrained, experts);
        using var sparse = ModelUpscaler.For(pretrained).WithExperts(experts).WithTaskVectorStorage(TaskVectorStorageOptions.Sparse(0.9)).Build();
        long denseBytes = dense.Modules.Sum(m => m.Module.TaskVectors.Bytes);
        long sparseBytes = sparse.Modules.Sum(m => m.Module.TaskVectors.Bytes);
        Assert.That(sparseBytes, Is.LessThan(0.25 * denseBytes));
        using var images = TinyClip.Images(2, 14);
        using var output = sparse.Forward(images);
        Assert.That(output.LastHiddenState.isfinite().all().item<bool>(), Is.True);
    }

    [Test]
    public void Build_FullRankLowRankStorage_EqualsDense()
    {
        using var dense = Upscaler.Upcycle(pretrained, experts);
        using var lowRank = ModelUpscaler.For(pretrained).WithExperts(experts).WithTaskVectorStorage(TaskVectorStorageOptions.LowRank(16)).Build();
        RandomiseRouters(dense, 15);
        lowRank.LoadRouterStateDict(dense.RouterStateDict());
        using var images = TinyClip.Images(3, 16);
        using var a = dense.Forward(images);
        using var b = lowRank.Forward(images);
        Assert.That(TinyClip.MaxDifference(a.LastHiddenState, b.LastHiddenState), Is.LessThan(1e-4));
    }

    [Test]
    public void LoadRouterStateDict_FromAnotherModel_GivesIdenticalOutputs()
    {
        using var source = ModelUpscaler.For(pretrained).WithExperts(experts).WithSeed(1).Build();
        using var target = ModelUpscaler.For(pretrained).WithExperts(experts).WithSeed(2).Build();
        RandomiseRouters(source, 17);
        target.LoadRouterStateDict(source.RouterStateDict());
        using var images = TinyClip.Images(2, 18);
        using var a = source.Forward(images);
        using var b = target.Forward(images);
        Assert.That(TinyClip.MaxDifference(a.LastHiddenState, b.LastHiddenState), Is.EqualTo(0.0));
    }

    [Test]
    public void Build_ZeroExperts_Throws()
    {
        Assert.That(() => ModelUpscaler.For(pretrained).Build(), Throws.ArgumentException.With.Message.Contains("expert"));
    }

    [Test]
    public void Build_ExpertWithOtherShape_ThrowsNamingTensor()
    {
        using var other = TinyClip.Pretrained(2, TinyClip.Config with { IntermediateSize = 24 });
        Assert.That(
            () => ModelUpscaler.For(pretrained).WithExperts(experts[0], other).Build(),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("expert 1").And.Message.Contains("mlp.fc1.weight"));
    }

    [Test]
    public void Build_ExpertWithNaN_ThrowsNamingModelAndTensor()
    {
        using (no_grad())
        {
            experts[2].state_dict()["vision_model.encoder.layers.1.mlp.fc2.bias"][3] = float.NaN;
        }

        Assert.That(
            () => ModelUpscaler.For(pretrained).WithExperts(experts).Build(),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("expert 2").And.Message.Contains("layers.1.mlp.fc2.bias"));
    }

    [Test]
    public void Build_PretrainedWithInfInNonUpscaledTensor_ThrowsNamingTensor()
    {
        using (no_grad())
        {
            pretrained.state_dict()["vision_model.post_layernorm.weight"][0] = float.PositiveInfinity;
        }

        Assert.That(
            () => ModelUpscaler.For(pretrained).WithExperts(experts).Build(),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("pre-trained").And.Message.Contains("post_layernorm.weight"));
    }

    [Test]
    public void Build_ExpertWithoutProjection_Throws()
    {
        using var noProjection = new ClipVisionModel(TinyClip.Config, withProjection: false);
        Assert.That(
            () => ModelUpscaler.For(pretrained).WithExperts(experts[0], noProjection).Build(),
            Throws.InstanceOf<InvalidDataException>().With.Message.Contains("projection"));
    }

    [Test]
    public void Build_LayerOutOfRange_ThrowsNamingLayer()
    {
        Assert.That(
            () => ModelUpscaler.For(pretrained).WithExperts(experts).WithLayers(0, 5).Build(),
            Throws.ArgumentException.With.Message.Contains("Layer 5"));
    }

    [Test]
    public void Build_PositionEncodingWithoutSharedRouter_ThrowsNamingOption()
    {
        var options = new ModelUpscalerOptions { PositionEncoding = true };
        Assert.That(
            () => ModelUpscaler.For(pretrained).WithExperts(experts).WithOptions(options).Build(),
            Throws.ArgumentException.With.Message.Contains(nameof(ModelUpscalerOptions.PositionEncoding)));
    }

    [Test]
    public void Build_SelectedLayers_UpscalesOnlyThoseAndMergesTheRest()
    {
        using var upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).WithLayers(1).Build();
        Assert.That(upscaled.Modules.Select(m => m.LayerIndex), Is.EqualTo(new[] { 1 }));
        Assert.That(upscaled.Model.Layers[0].Mlp, Is.InstanceOf<ClipMlp>());
        var merged = StateDictMerging.TaskArithmetic(pretrained.state_dict(), experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.state_dict()).ToList(), 0.3);
        var actual = upscaled.Model.state_dict()["vision_model.encoder.layers.0.mlp.fc1.weight"];
        Assert.That(TinyClip.MaxDifference(actual, merged["vision_model.encoder.layers.0.mlp.fc1.weight"]), Is.LessThan(1e-6));
    }

    [Test]
    public void CountParameters_DenseUpscaled_CountsRoutersAsTrainableAndTaskVectorsInTotal()
    {
        using var upscaled = Upscaler.Upcycle(pretrained, experts);
        var counts = upscaled.CountParameters();
        long routers = upscaled.TrainableParameters().Sum(p => p.numel());
        long taskVectors = upscaled.Modules.Sum(m => m.Module.TaskVectors.ElementCount);
        long plain = pretrained.parameters().Sum(p => p.numel());
        Assert.That(counts.Trainable, Is.EqualTo(routers));
        Assert.That(counts.Total, Is.EqualTo(plain + routers + taskVectors));
    }

    private static void ZeroLastRouterLayers(UpscaledModel upscaled)
    {
        using var noGrad = no_grad();
        foreach (var module in upscaled.Modules)
        {
            foreach (var (name, parameter) in module.Module.Gate.named_parameters())
            {
                if (name.EndsWith("weight", StringComparison.Ordinal) && name.StartsWith("fc2", StringComparison.Ordinal))
                {
                    parameter.zero_();
                }
            }
        }
    }

    private static void RandomiseRouters(UpscaledModel upscaled, int seed)
    {
        using var generator = new Generator((ulong)seed);
        using var noGrad = no_grad();
        foreach (var parameter in upscaled.TrainableParameters())
        {
            parameter.add_(randn(parameter.shape, generator: generator) * 0.5);
        }
    }
}
