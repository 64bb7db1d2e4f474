using TorchSharp;
using WeightEnsembling.Merging;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Merging;

[TestFixture, NonParallelizable]
public sealed class FisherMergingTests
{
    private static readonly FisherMergingOptions FixtureOptions = new()
    {
        ExampleCount = 5, BatchSize = 2, Shuffle = false, Labels = FisherLabels.True,
    };

    private static IReadOnlyDictionary<string, Tensor> Vector(float[] values) => new Dictionary<string, Tensor> { ["w"] = tensor(values) };

    [Test]
    public void Run_FromPool_MatchesPyTorchFisherMerge()
    {
        using var fixture = new FisherRegMeanFixture();
        using var scope = NewDisposeScope();
        var pool = WeightEnsembling.Models.ModelPool.FromModels(fixture.Models[0], fixture.Models);
        using var merged = FisherMerging.Run(pool, fixture.Heads, fixture.Datasets, FixtureOptions);
        var weights = merged.state_dict();
        var expected = fixture.Section("fisher_merge/");
        Assert.That(weights.Keys, Is.EquivalentTo(expected.Keys));
        foreach (var (name, value) in expected)
        {
            Assert.That(FisherRegMeanFixture.RelativeError(weights[name], value), Is.LessThan(1e-4), name);
        }
    }

    [Test]
    public void ComputeFisher_TrueLabelsPerExample_MatchesPyTorchAutograd()
    {
        using var fixture = new FisherRegMeanFixture();
        using var scope = NewDisposeScope();
        for (int t = 0; t < 2; t++)
        {
            var fisher = FisherMerging.ComputeFisher(fixture.Models[t], fixture.Heads[t], fixture.Datasets[t], FixtureOptions);
            var expected = fixture.Section($"fisher/{t}/");
            Assert.That(fisher.Keys, Is.EquivalentTo(expected.Keys));
            foreach (var (name, value) in expected)
            {
                Assert.That(FisherRegMeanFixture.RelativeError(fisher[name], value), Is.LessThan(1e-4), name);
            }
        }
    }

    [Test]
    public void Run_TrueLabels_MatchesPyTorchFisherMerge()
    {
        using var fixture = new FisherRegMeanFixture();
        using var scope = NewDisposeScope();
        using var merged = FisherMerging.Run(fixture.Models, fixture.Heads, fixture.Datasets, FixtureOptions);
        var weights = merged.state_dict();
        var expected = fixture.Section("fisher_merge/");
        Assert.That(weights.Keys, Is.EquivalentTo(expected.Keys));
        foreach (var (name, value) in expected)
        {
            Assert.That(FisherRegMeanFixture.RelativeError(weights[name], value), Is.LessThan(1e-4), name);
        }
    }

    [Test]
    public void Merge_EqualFishers_EqualsSimpleAverage()
    {
        using var scope = NewDisposeScope();
        using var pretrained = TinyClip.Pretrained(5);
        using var a = TinyClip.Expert(pretrained, 1);
        using var b = TinyClip.Expert(pretrained, 2);
        var models = new IReadOnlyDictionary<string, Tensor>[] { StateDict.From(a), StateDict.From(b) };
        var fisher = models[0].ToDictionary(p => p.Key, p => rand(p.Value.shape));
        var merged = FisherMerging.Merge(models, [fisher, fisher]);
        var average = StateDictMerging.SimpleAverage(models);
        foreach (var (name, value) in average)
        {
            Assert.That(TinyClip.MaxDifference(merged[name], value), Is.LessThan(1e-6), name);
        }
    }

    [Test]
    public void Merge_AllZeroFishers_EqualsSimpleAverage()
    {
        using var scope = NewDisposeScope();
        var merged = FisherMerging.Merge([Vector([0, 4]), Vector([2, 0])], [Vector([0, 0]), Vector([0, 0])]);
        Assert.That(merged["w"].data<float>().ToArray(), Is.EqualTo(new float[] { 1, 2 }));
        Assert.That(merged["w"].isfinite().all().item<bool>(), Is.True);
    }

    [Test]
    public void Merge_ByHandWithoutNormalisation_WeighsByRawFisher()
    {
        using var scope = NewDisposeScope();
        // θ1 = [0, 4], F1 = [1, 3]; θ2 = [2, 0], F2 = [6, 2]: [(1·0 + 6·2)/7, (3·4 + 2·0)/5] = [12/7, 2.4] (up to ε = 1e-6).
        var merged = FisherMerging.Merge(
            [Vector([0, 4]), Vector([2, 0])], [Vector([1, 3]), Vector([6, 2])], new FisherMergingOptions { NormalizeFisher = false });
        Assert.That(merged["w"].data<float>().ToArray(), Is.EqualTo(new[] { 12f / 7, 2.4f }).Within(1e-5f));
    }

    [Test]
    public void Merge_ByHandWithNormalisation_DividesEachFisherByItsNorm()
    {
        using var scope = NewDisposeScope();
        // ‖F2‖ = 2‖F1‖, so after normalisation F2 counts as [3, 1]: [(0 + 3·2)/4, (3·4 + 0)/4] = [1.5, 3].
        var merged = FisherMerging.Merge([Vector([0, 4]), Vector([2, 0])], [Vector([1, 3]), Vector([6, 2])]);
        Assert.That(merged["w"].data<float>().ToArray(), Is.EqualTo(new[] { 1.5f, 3f }).Within(1e-5f));
    }

    [Test]
    public void Merge_TensorWithoutFisher_IsAveraged()
    {
        using var scope = NewDisposeScope();
        IReadOnlyDictionary<string, Tensor> Model(float w, float b) =>
            new Dictionary<string, Tensor> { ["w"] = tensor(new[] { w }), ["b"] = tensor(new[] { b }) };
        var merged = FisherMerging.Merge([Model(0, 1), Model(2, 5)], [Vector([3]), Vector([1])], new FisherMergingOptions { NormalizeFisher = false });
        Assert.That(merged["w"].item<float>(), Is.EqualTo(0.5f).Within(1e-5f));
        Assert.That(merged["b"].item<float>(), Is.EqualTo(3f));
    }

    [Test]
    public void Merge_NegativeFisher_ThrowsNamingTensor()
    {
        using var scope = NewDisposeScope();
        var error = Assert.Throws<ArgumentException>(() => FisherMerging.Merge([Vector([0, 4])], [Vector([1, -3])]));
        Assert.That(error!.Message, Does.Contain("'w'").And.Contain("negative"));
    }

    [Test]
    public void Merge_FisherOfWrongShape_ThrowsNamingTensor()
    {
        using var scope = NewDisposeScope();
        var error = Assert.Throws<ArgumentException>(() => FisherMerging.Merge([Vector([0, 4])], [Vector([1, 2, 3])]));
        Assert.That(error!.Message, Does.Contain("'w'").And.Contain("[3]"));
    }

    [Test]
    public void ComputeFisher_RestoresRequiresGradFlags()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(6);
        using var head = new LinearClassificationHead(8, 2);
        using var data = new InMemoryTaskDataset("t", TinyClip.Images(3, 4), null, 2);
        foreach (var parameter in model.parameters())
        {
            parameter.requires_grad = false;
        }

        var fisher = FisherMerging.ComputeFisher(model, head, data);
        Assert.That(model.parameters().Any(p => p.requires_grad), Is.False);
        Assert.That(head.IsFrozen, Is.True);
        Assert.That(fisher.Values.All(f => f.ge(0).all().item<bool>() && f.isfinite().all().item<bool>()), Is.True);
        Assert.That(fisher.Values.Any(f => f.gt(0).any().item<bool>()), Is.True, "gradients flowed");
    }

    [Test]
    public void ComputeFisher_SampledLabelsWithSameSeed_IsReproducible()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(6);
        using var head = new LinearClassificationHead(8, 3);
        using var data = new InMemoryTaskDataset("t", TinyClip.Images(4, 4), null, 3);
        var options = new FisherMergingOptions { BatchSize = 2, PerExampleGradients = false, Seed = 3 };
        var first = FisherMerging.ComputeFisher(model, head, data, options);
        var second = FisherMerging.ComputeFisher(model, head, data, options);
        foreach (var (name, value) in first)
        {
            Assert.That(TinyClip.MaxDifference(value, second[name]), Is.EqualTo(0), name);
        }
    }

    [Test]
    public void ComputeFisher_TrueLabelsOnUnlabelledData_ThrowsNamingDataset()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(6);
        using var head = new LinearClassificationHead(8, 2);
        using var data = new InMemoryTaskDataset("unlabelled", TinyClip.Images(3, 4), null, 2);
        var error = Assert.Throws<ArgumentException>(() => FisherMerging.ComputeFisher(model, head, data, new FisherMergingOptions { Labels = FisherLabels.True }));
        Assert.That(error!.Message, Does.Contain("'unlabelled'"));
    }

    [Test]
    public void Run_WithOneTask_ReturnsThatModel()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(7);
        using var head = new LinearClassificationHead(8, 2);
        using var data = new InMemoryTaskDataset("t", TinyClip.Images(3, 4), null, 2);
        using var merged = FisherMerging.Run([model], [head], [data], new FisherMergingOptions { BatchSize = 2 });
        var expected = model.state_dict();
        foreach (var (name, value) in merged.state_dict())
        {
            Assert.That(TinyClip.MaxDifference(value, expected[name]), Is.LessThan(1e-6), name);
        }
    }

    [Test]
    public void Validate_BatchedGradientsWithTrueLabels_NamesOption()
    {
        var options = new FisherMergingOptions { PerExampleGradients = false, Labels = FisherLabels.True };
        var error = Assert.Throws<ArgumentException>(options.Validate);
        Assert.That(error!.ParamName, Is.EqualTo(nameof(FisherMergingOptions.PerExampleGradients)));
    }

    [TestCase(0.0)]
    [TestCase(-1e-6)]
    [TestCase(double.NaN)]
    public void Validate_NonPositiveFloor_NamesMinimalFisher(double floor)
    {
        var error = Assert.Throws<ArgumentException>(new FisherMergingOptions { MinimalFisher = floor }.Validate);
        Assert.That(error!.ParamName, Is.EqualTo(nameof(FisherMergingOptions.MinimalFisher)));
    }
}
