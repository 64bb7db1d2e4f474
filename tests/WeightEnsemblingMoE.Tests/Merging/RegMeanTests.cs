using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Merging;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Merging;

[TestFixture, NonParallelizable]
public sealed class RegMeanTests
{
    private static readonly RegMeanOptions FixtureOptions = new() { ExampleCount = 5, BatchSize = 2, Shuffle = false };

    private static IReadOnlyDictionary<string, Tensor> Linear(float[,] weight, float[] bias) =>
        new Dictionary<string, Tensor> { ["lin.weight"] = tensor(weight), ["lin.bias"] = tensor(bias) };

    private static IReadOnlyDictionary<string, Tensor> Gram(float[,] gram) => new Dictionary<string, Tensor> { ["lin"] = tensor(gram) };

    [Test]
    public void Run_FromPool_MatchesPyTorchRegMean()
    {
        using var fixture = new FisherRegMeanFixture();
        using var scope = NewDisposeScope();
        var pool = WeightEnsembling.Models.ModelPool.FromModels(fixture.Models[0], fixture.Models);
        using var merged = RegMean.Run(pool, fixture.Datasets, FixtureOptions);
        var weights = merged.state_dict();
        var expected = fixture.Section("regmean/");
        Assert.That(weights.Keys, Is.EquivalentTo(expected.Keys));
        foreach (var (name, value) in expected)
        {
            Assert.That(FisherRegMeanFixture.RelativeError(weights[name], value), Is.LessThan(1e-4), name);
        }
    }

    [Test]
    public void ComputeGramMatrices_MatchesPyTorchForwardHooks()
    {
        using var fixture = new FisherRegMeanFixture();
        using var scope = NewDisposeScope();
        for (int t = 0; t < 2; t++)
        {
            var grams = RegMean.ComputeGramMatrices(fixture.Models[t], fixture.Datasets[t], FixtureOptions);
            var expected = fixture.Section($"gram/{t}/");
            Assert.That(grams.Keys, Is.EquivalentTo(expected.Keys), "every nn.Linear of the model, named as in PyTorch");
            Assert.That(grams.Count, Is.EqualTo((2 * 6) + 1));
            foreach (var (name, gram) in expected)
            {
                Assert.That(FisherRegMeanFixture.RelativeError(grams[name], gram), Is.LessThan(1e-5), name);
            }
        }
    }

    [Test]
    public void ComputeGramMatrices_RestoresSlotsAndLeavesOutputsUnchanged()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(3);
        using var data = new InMemoryTaskDataset("t", TinyClip.Images(4, 5), null, 2);
        var attention = model.Layers.Select(l => l.SelfAttention).ToArray();
        var mlps = model.Layers.Select(l => l.Mlp).ToArray();
        var before = model.GetImageFeatures(TinyClip.Images(2, 9));
        RegMean.ComputeGramMatrices(model, data, new RegMeanOptions { BatchSize = 3 });
        Assert.That(model.Layers.Select(l => l.SelfAttention), Is.EqualTo(attention).AsCollection);
        Assert.That(model.Layers.Select(l => l.Mlp), Is.EqualTo(mlps).AsCollection);
        Assert.That(model.state_dict().Keys, Does.Not.Contain("vision_model.encoder.layers.0.mlp.inner"));
        Assert.That(TinyClip.MaxDifference(model.GetImageFeatures(TinyClip.Images(2, 9)), before), Is.EqualTo(0));
    }

    [Test]
    public void ComputeGramMatrices_WhenCancelled_ThrowsAndRestoresSlots()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(3);
        using var data = new InMemoryTaskDataset("t", TinyClip.Images(4, 5), null, 2);
        var mlp = model.Layers[0].Mlp;
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => RegMean.ComputeGramMatrices(model, data, cancellationToken: cancelled.Token));
        Assert.That(model.Layers[0].Mlp, Is.SameAs(mlp));
    }

    [Test]
    public void ComputeGramMatrices_ReportsProgressPerBatch()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(3);
        using var data = new InMemoryTaskDataset("digits", TinyClip.Images(5, 5), null, 2);
        var reports = new List<MergeProgress>();
        RegMean.ComputeGramMatrices(model, data, new RegMeanOptions { BatchSize = 2, ExampleCount = 4 }, new SynchronousProgress(reports.Add));
        Assert.That(reports.Select(r => r.Examples), Is.EqualTo(new long[] { 2, 4 }));
        Assert.That(reports.All(r => r.TotalExamples == 4 && r.Task == "digits" && r.Method == "regmean"), Is.True);
    }

    [Test]
    public void Run_MatchesPyTorchRegMean()
    {
        using var fixture = new FisherRegMeanFixture();
        using var scope = NewDisposeScope();
        using var merged = RegMean.Run(fixture.Models, fixture.Datasets, FixtureOptions);
        var weights = merged.state_dict();
        var expected = fixture.Section("regmean/");
        Assert.That(weights.Keys, Is.EquivalentTo(expected.Keys));
        foreach (var (name, value) in expected)
        {
            Assert.That(FisherRegMeanFixture.RelativeError(weights[name], value), Is.LessThan(1e-4), name);
        }
    }

    [Test]
    public void Run_WithOneTask_ReturnsThatTasksWeights()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(4);
        using var data = new InMemoryTaskDataset("t", TinyClip.Images(6, 7), null, 2);
        using var merged = RegMean.Run([model], [data], new RegMeanOptions { BatchSize = 4 });
        var expected = model.state_dict();
        foreach (var (name, value) in merged.state_dict())
        {
            Assert.That(FisherRegMeanFixture.RelativeError(value, expected[name]), Is.LessThan(1e-4), name);
        }
    }

    [Test]
    public void Merge_LinearModelWithOneTask_ReturnsItsWeights()
    {
        using var scope = NewDisposeScope();
        var model = Linear(new float[,] { { 1, -2, 3 }, { 0.5f, 4, -1 } }, [1, 2]);
        var merged = RegMean.Merge([model], [Gram(new float[,] { { 2, 1, 0 }, { 1, 3, 1 }, { 0, 1, 4 } })]);
        Assert.That(FisherRegMeanFixture.RelativeError(merged["lin.weight"], model["lin.weight"]), Is.LessThan(1e-6));
        Assert.That(FisherRegMeanFixture.RelativeError(merged["lin.bias"], model["lin.bias"]), Is.LessThan(1e-6));
    }

    [Test]
    public void Merge_DiagonalGramsByHand_WeighsEachInputByItsEnergy()
    {
        using var scope = NewDisposeScope();
        // A = diag(2, 1) + diag(1, 1) = diag(3, 2); B = G1 W1ᵀ + G2 W2ᵀ = [6, 3] + [0, 1] = [6, 4]; Wᵀ = [2, 2].
        var merged = RegMean.Merge(
            [Linear(new float[,] { { 3, 3 } }, [1]), Linear(new float[,] { { 0, 1 } }, [3])],
            [Gram(new float[,] { { 2, 0 }, { 0, 1 } }), Gram(new float[,] { { 1, 0 }, { 0, 1 } })]);
        Assert.That(merged["lin.weight"].data<float>().ToArray(), Is.EqualTo(new float[] { 2, 2 }).Within(1e-6f));
        Assert.That(merged["lin.bias"].item<float>(), Is.EqualTo(2f).Within(1e-6f), "biases are averaged");
    }

    [Test]
    public void Merge_OffDiagonalScaledByAlpha()
    {
        using var scope = NewDisposeScope();
        // One task: any α gives its weights back; two tasks with G1 = [[1, 1], [1, 1]], G2 = I and α = 0.5:
        // G̃1 = [[1, .5], [.5, 1]]; A = [[2, .5], [.5, 2]]; W1 = [2, 0], W2 = [0, 2] → B = [2, 1] + [0, 2] = [2, 3];
        // Wᵀ = A⁻¹ B = [2·2 − .5·3, 2·3 − .5·2] / 3.75 = [2.5, 5] / 3.75.
        var merged = RegMean.Merge(
            [Linear(new float[,] { { 2, 0 } }, [0]), Linear(new float[,] { { 0, 2 } }, [0])],
            [Gram(new float[,] { { 1, 1 }, { 1, 1 } }), Gram(new float[,] { { 1, 0 }, { 0, 1 } })],
            new RegMeanOptions { Alpha = 0.5 });
        Assert.That(merged["lin.weight"].data<float>().ToArray(), Is.EqualTo(new[] { 2.5f / 3.75f, 5f / 3.75f }).Within(1e-6f));
    }

    [Test]
    public void Merge_ZeroGramMatrices_FallBackToSimpleAverage()
    {
        using var scope = NewDisposeScope();
        var zero = new float[,] { { 0, 0 }, { 0, 0 } };
        var merged = RegMean.Merge([Linear(new float[,] { { 1, 5 } }, [0]), Linear(new float[,] { { 3, 7 } }, [0])], [Gram(zero), Gram(zero)]);
        Assert.That(merged["lin.weight"].data<float>().ToArray(), Is.EqualTo(new float[] { 2, 6 }));
    }

    [Test]
    public void Merge_InputNoTaskExcites_TakesAverageThereAndRegMeanElsewhere()
    {
        using var scope = NewDisposeScope();
        // Input 1 is always zero: A = diag(4, 0) is singular. Ridge fallback: input 0 → (3·1 + 1·3)/4 = 1.5, input 1 → average 6.
        var merged = RegMean.Merge(
            [Linear(new float[,] { { 1, 5 } }, [0]), Linear(new float[,] { { 3, 7 } }, [0])],
            [Gram(new float[,] { { 3, 0 }, { 0, 0 } }), Gram(new float[,] { { 1, 0 }, { 0, 0 } })]);
        Assert.That(merged["lin.weight"].data<float>().ToArray(), Is.EqualTo(new float[] { 1.5f, 6 }).Within(1e-5f));
    }

    [Test]
    public void Merge_SingularGramWithThrowOption_ThrowsNamingLayer()
    {
        using var scope = NewDisposeScope();
        var zero = new float[,] { { 0, 0 }, { 0, 0 } };
        var error = Assert.Throws<InvalidOperationException>(() => RegMean.Merge(
            [Linear(new float[,] { { 1, 5 } }, [0])], [Gram(zero)], new RegMeanOptions { ThrowOnIllConditioned = true }));
        Assert.That(error!.Message, Does.Contain("'lin'"));
    }

    [Test]
    public void Merge_GramOfWrongShape_ThrowsNamingLayer()
    {
        using var scope = NewDisposeScope();
        var error = Assert.Throws<ArgumentException>(() => RegMean.Merge(
            [Linear(new float[,] { { 1, 5 } }, [0])], [Gram(new float[,] { { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } })]));
        Assert.That(error!.Message, Does.Contain("'lin'").And.Contain("[2, 2]"));
    }

    [Test]
    public void Merge_GramWithNaN_ThrowsNamingLayer()
    {
        using var scope = NewDisposeScope();
        var error = Assert.Throws<ArgumentException>(() => RegMean.Merge(
            [Linear(new float[,] { { 1, 5 } }, [0])], [Gram(new float[,] { { float.NaN, 0 }, { 0, 1 } })]));
        Assert.That(error!.Message, Does.Contain("'lin'").And.Contain("NaN"));
    }

    [Test]
    public void Merge_GramsOfDifferentModules_ThrowsNamingThem()
    {
        using var scope = NewDisposeScope();
        var other = new Dictionary<string, Tensor> { ["other"] = eye(2) };
        var error = Assert.Throws<ArgumentException>(() => RegMean.Merge(
            [Linear(new float[,] { { 1, 5 } }, [0]), Linear(new float[,] { { 1, 5 } }, [0])], [Gram(new float[,] { { 1, 0 }, { 0, 1 } }), other]));
        Assert.That(error!.Message, Does.Contain("missing [lin]").And.Contain("extra [other]"));
    }

    [TestCase(-0.1)]
    [TestCase(1.5)]
    [TestCase(double.NaN)]
    public void Validate_AlphaOutOfRange_NamesAlpha(double alpha)
    {
        var error = Assert.Throws<ArgumentException>(() => new RegMeanOptions { Alpha = alpha }.Validate());
        Assert.That(error!.ParamName, Is.EqualTo(nameof(RegMeanOptions.Alpha)));
    }

    [Test]
    public void Validate_NonPositiveRidge_NamesRidgeRatio()
    {
        var error = Assert.Throws<ArgumentException>(() => new RegMeanOptions { RidgeRatio = 0 }.Validate());
        Assert.That(error!.ParamName, Is.EqualTo(nameof(RegMeanOptions.RidgeRatio)));
    }

    [Test]
    public void Run_ModelWithUpscaledSlot_ThrowsNamingLayer()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(3);
        using var data = new InMemoryTaskDataset("t", TinyClip.Images(2, 5), null, 2);
        var mlp = model.Layers[1].Mlp;
        using var replacement = nn.Identity();
        model.Layers[1].Mlp = replacement;
        try
        {
            var error = Assert.Throws<ArgumentException>(() => RegMean.ComputeGramMatrices(model, data));
            Assert.That(error!.Message, Does.Contain("encoder layer 1"));
        }
        finally
        {
            model.Layers[1].Mlp = mlp;
        }
    }

    [Test]
    public void RegisterForwardHook_OnLayerCalledThroughForward_DoesNotFire()
    {
        // Why RegMean records through IMergeableModule: TorchSharp runs hooks in Module.call, not in forward.
        using var scope = NewDisposeScope();
        using var linear = nn.Linear(2, 2);
        int fired = 0;
        linear.register_forward_hook((module, input, output) =>
        {
            fired++;
            return output;
        });
        linear.forward(ones(1, 2));
        Assert.That(fired, Is.EqualTo(0), "forward");
        linear.call(ones(1, 2));
        Assert.That(fired, Is.EqualTo(1), "call");
    }

    /// <summary>An <see cref="IProgress{T}"/> that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SynchronousProgress(Action<MergeProgress> report) : IProgress<MergeProgress>
    {
        public void Report(MergeProgress value) => report(value);
    }
}
