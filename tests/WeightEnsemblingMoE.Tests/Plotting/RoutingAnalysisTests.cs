using WeightEnsembling.Analysis;
using WeightEnsembling.Clip;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Plotting;

[TestFixture, NonParallelizable]
public sealed class RoutingAnalysisTests
{
    private ClipVisionModel pretrained = null!;
    private ClipVisionModel[] experts = null!;
    private UpscaledModel upscaled = null!;
    private InMemoryTaskDataset data = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        pretrained = TinyClip.Pretrained(seed: 5);
        experts = [TinyClip.Expert(pretrained, 41), TinyClip.Expert(pretrained, 42), TinyClip.Expert(pretrained, 43)];
        upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).WithSeed(7).Build();
        using var scope = NewDisposeScope();
        data = new InMemoryTaskDataset("gamma", TinyClip.Images(7, seed: 51), null, classCount: 2);
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        upscaled.Dispose();
        data.Dispose();
        pretrained.Dispose();
        foreach (var expert in experts)
        {
            expert.Dispose();
        }
    }

    [Test]
    public void AverageRouting_EqualsMeanOfOneFullBatchRouting()
    {
        var map = RoutingAnalysis.AverageRouting(upscaled, data, batchSize: 3, ["a", "b", "c"]);
        using var noGrad = no_grad();
        using var all = data.GetBatch(Enumerable.Range(0, 7).Select(i => (long)i).ToArray());
        using var output = upscaled.Forward(all.Images);
        var routing = upscaled.LastRoutingWeights();
        Assert.That(map.Modules, Is.EqualTo(upscaled.Modules.Select(m => m.Path)));
        Assert.That(map.Experts, Is.EqualTo(new[] { "a", "b", "c" }));
        Assert.That(map.Task, Is.EqualTo("gamma"));
        for (int m = 0; m < map.Modules.Count; m++)
        {
            var mean = routing[map.Modules[m]].to_type(ScalarType.Float64).mean([0L]).data<double>().ToArray();
            for (int e = 0; e < 3; e++)
            {
                Assert.That(map[m, e], Is.EqualTo(mean[e]).Within(1e-6), $"{map.Modules[m]} expert {e}");
            }
        }
    }

    [Test]
    public void AverageRouting_ToRoutingVectors_MergesAtTheMeanRouting()
    {
        var map = RoutingAnalysis.AverageRouting(upscaled, data, batchSize: 4);
        Assert.That(map.Experts, Is.EqualTo(new[] { "expert 1", "expert 2", "expert 3" }));
        var vectors = map.ToRoutingVectors();
        using var merged = upscaled.MergeAndUnload(vectors);
        Assert.That(vectors.Values.Select(v => v.shape), Is.All.EqualTo(new long[] { 3 }));
        Assert.That(vectors[map.Modules[1]][2].item<float>(), Is.EqualTo((float)map[1, 2]));
        foreach (var vector in vectors.Values)
        {
            vector.Dispose();
        }
    }

    [Test]
    public void AverageRouting_WrongExpertCount_ThrowsNamingCounts()
    {
        var ex = Assert.Throws<ArgumentException>(() => RoutingAnalysis.AverageRouting(upscaled, data, 4, ["a", "b"]));
        Assert.That(ex!.Message, Does.Contain("3 experts").And.Contain("2 expert names"));
    }

    [Test]
    public void RoutingMap_WrongMatrixShape_ThrowsNamingTask()
    {
        var ex = Assert.Throws<ArgumentException>(() => new RoutingMap("t", ["m"], ["a", "b"], new double[2, 2]));
        Assert.That(ex!.Message, Does.Contain("'t'").And.Contain("2×2"));
    }
}
