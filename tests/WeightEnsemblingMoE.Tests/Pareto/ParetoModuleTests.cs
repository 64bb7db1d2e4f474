using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Pareto;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Pareto;

[TestFixture, NonParallelizable]
public sealed class ParetoModuleTests
{
    private const double Lambda = 0.3;
    private ClipVisionModel pretrained = null!;
    private ClipVisionModel[] experts = null!;

    [SetUp]
    public void SetUp()
    {
        pretrained = TinyClip.Pretrained();
        experts = [TinyClip.Expert(pretrained, 21), TinyClip.Expert(pretrained, 22), TinyClip.Expert(pretrained, 23)];
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
    public void BuildPareto_Defaults_OnlyPreferenceRoutersRequireGrad()
    {
        using var model = Build();
        var trainable = model.Model.named_parameters().Where(p => p.parameter.requires_grad).ToDictionary(p => p.name, p => p.parameter.shape);
        Assert.That(trainable.Keys, Has.All.Contains(".mlp.gate."));
        Assert.That(trainable, Has.Count.EqualTo(8));
        Assert.That(trainable["vision_model.encoder.layers.0.mlp.gate.fc1.weight"], Is.EqualTo(new long[] { 6, 3 }));
        Assert.That(trainable["vision_model.encoder.layers.1.mlp.gate.fc2.weight"], Is.EqualTo(new long[] { 3, 6 }));
        Assert.That(model.TrainableParameters(), Has.Count.EqualTo(8));
    }

    [Test]
    public void Create_DepthOne_LinearTaskToTaskWithBiasLambda()
    {
        using var generator = new Generator(3);
        using var router = PreferenceRouter.Create(1, 4, 0.25, generator);
        var state = router.state_dict();
        Assert.That(state.Keys, Is.EquivalentTo(new[] { "fc.weight", "fc.bias" }));
        Assert.That(state["fc.weight"].shape, Is.EqualTo(new long[] { 4, 4 }));
        Assert.That(state["fc.bias"].data<float>().ToArray(), Has.All.EqualTo(0.25f));
        Assert.That(state["fc.weight"].std().item<float>(), Is.InRange(0.002f, 0.03f));
    }

    [Test]
    public void Forward_PreferenceSet_EqualsStaticMergeWithRoutingWeights()
    {
        using var model = Build();
        Perturb(model, 7);
        double[] p = [0.2, 0.5, 0.3];
        model.SetPreference(p);

        // Independent static merge: upscaled MLPs at their routing weights, everything else by task arithmetic at λ.
        var theta0 = pretrained.state_dict();
        var thetas = experts.Select(e => e.state_dict()).ToArray();
        var routings = model.Modules.ToDictionary(m => m.Path, m => m.Module.RoutingWeights(p).data<float>().ToArray());
        var weights = new Dictionary<string, Tensor>();
        using (no_grad())
        {
            foreach (var (key, value) in theta0)
            {
                var module = routings.Keys.FirstOrDefault(path => key.StartsWith(path + ".", StringComparison.Ordinal));
                var merged = value.clone();
                for (int t = 0; t < experts.Length; t++)
                {
                    double scale = module is null ? Lambda : routings[module][t];
                    merged.add_((thetas[t][key] - value) * scale);
                }

                weights[key] = merged;
            }
        }

        Assert.That(routings.Values.First()[0], Is.Not.EqualTo(routings.Values.First()[1]).Within(1e-3), "the test needs routing weights that differ per task");
        using var reference = TinyClip.WithWeights(weights);
        using var images = TinyClip.Images(4, 9);
        using var expected = reference.forward(images);
        using var actual = model.Forward(images);
        Assert.That(TinyClip.MaxDifference(actual.ImageEmbeds!, expected.ImageEmbeds!), Is.LessThan(1e-5));
        Assert.That(TinyClip.MaxDifference(actual.LastHiddenState, expected.LastHiddenState), Is.LessThan(1e-5));
    }

    [Test]
    public void MergeAndUnload_AtPreference_OutputsEqualModel()
    {
        using var model = Build(UpscaleTargets.MlpAndAttention);
        Perturb(model, 8);
        double[] p = [0.6, 0.1, 0.3];
        using var merged = model.MergeAndUnload(p);
        model.SetPreference(p);
        using var images = TinyClip.Images(3, 4);
        using var expected = model.Forward(images);
        using var actual = merged.forward(images);
        Assert.That(TinyClip.MaxDifference(actual.ImageEmbeds!, expected.ImageEmbeds!), Is.LessThan(1e-5));
        Assert.That(merged.state_dict().Keys.Any(k => k.Contains(".gate.")), Is.False);
    }

    [Test]
    public void Forward_PreferenceChanged_UsesNewMergedWeights()
    {
        using var model = Build();
        Perturb(model, 9);
        using var images = TinyClip.Images(2, 5);
        model.SetPreference([1.0, 0.0, 0.0]);
        using var first = model.Forward(images);
        model.SetPreference([0.0, 0.0, 1.0]);
        using var second = model.Forward(images);
        using var merged = model.MergeAndUnload([0.0, 0.0, 1.0]);
        using var expected = merged.forward(images);
        Assert.That(TinyClip.MaxDifference(first.ImageEmbeds!, second.ImageEmbeds!), Is.GreaterThan(1e-4));
        Assert.That(TinyClip.MaxDifference(second.ImageEmbeds!, expected.ImageEmbeds!), Is.LessThan(1e-5));
    }

    [Test]
    public void Forward_RouterChangedAtSamePreference_RecomputesMergedWeights()
    {
        using var model = Build();
        using var images = TinyClip.Images(2, 6);
        double[] p = [0.3, 0.3, 0.4];
        model.SetPreference(p);
        using var before = model.Forward(images);
        Perturb(model, 10);
        using var after = model.Forward(images);
        using var merged = model.MergeAndUnload(p);
        using var expected = merged.forward(images);
        Assert.That(TinyClip.MaxDifference(before.ImageEmbeds!, after.ImageEmbeds!), Is.GreaterThan(1e-4));
        Assert.That(TinyClip.MaxDifference(after.ImageEmbeds!, expected.ImageEmbeds!), Is.LessThan(1e-5));
    }

    [Test]
    public void Forward_WithoutPreference_ThrowsNamingSetPreference()
    {
        using var model = Build();
        using var images = TinyClip.Images(1, 1);
        var error = Assert.Throws<InvalidOperationException>(() => model.Forward(images).Dispose());
        Assert.That(error!.Message, Does.Contain("SetPreference"));
    }

    [TestCase(new[] { 0.5, 0.5 }, "2 entries")]
    [TestCase(new[] { 1.2, -0.2, 0.0 }, "non-negative")]
    [TestCase(new[] { 0.5, 0.5, 0.5 }, "sums to 1.5")]
    [TestCase(new[] { double.NaN, 0.5, 0.5 }, "finite")]
    public void SetPreference_BadPreference_ThrowsSayingWhy(double[] preference, string reason)
    {
        using var model = Build();
        var error = Assert.Throws<ArgumentException>(() => model.SetPreference(preference));
        Assert.That(error!.Message, Does.Contain(reason));
        Assert.That(error.ParamName, Is.EqualTo("preference"));
    }

    [Test]
    public void BuildPareto_RouterDepthZero_ThrowsNamingOption()
    {
        var error = Assert.Throws<ArgumentException>(() => ModelUpscaler.For(pretrained).WithExperts(experts).WithRouterDepth(0).BuildPareto().Dispose());
        Assert.That(error!.Message, Does.Contain("RouterDepth"));
    }

    private ParetoUpscaledModel Build(UpscaleTargets targets = UpscaleTargets.Mlp) =>
        ModelUpscaler.For(pretrained).WithExperts(experts).WithInitLambda(Lambda).WithTargets(targets).WithSeed(5).BuildPareto();

    // Routers far from their near-constant initialisation, so that routing depends on the preference.
    private static void Perturb(ParetoUpscaledModel model, int seed)
    {
        using var generator = new Generator((ulong)seed);
        using var noGrad = no_grad();
        foreach (var parameter in model.TrainableParameters())
        {
            parameter.add_(randn(parameter.shape, generator: generator) * 0.5);
        }
    }
}
