using WeightEnsembling.Tasks;
using WeightEnsembling.Analysis;
using WeightEnsembling.Merging;
using WeightEnsembling.Plotting;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Plotting;

/// <summary>
/// Writes the example figures of docs/plotting.md into docs/images (run on demand:
/// <c>dotnet test --filter "FullyQualifiedName~DocsImages"</c>). The loss landscape and the routing maps come from real
/// computations on tiny random CLIP models; the Pareto front and adaptation curves from synthetic numbers.
/// </summary>
[TestFixture, NonParallelizable, Explicit("Writes docs/images; run by hand when the figures change.")]
public sealed class DocsImages
{
    private static string Folder()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "WeightEnsemblingMoE.sln")))
        {
            directory = directory.Parent;
        }
        Assert.That(directory, Is.Not.Null, "repository root not found");
        return Path.Combine(directory!.FullName, "docs", "images");
    }

    [Test]
    public void WriteExampleFigures()
    {
        string folder = Folder();
        using var pretrained = TinyClip.Pretrained(seed: 3);
        using var expert1 = TinyClip.Expert(pretrained, seed: 11, scale: 0.3);
        using var expert2 = TinyClip.Expert(pretrained, seed: 12, scale: 0.3);
        using var head1 = PlotData.Head(21);
        using var head2 = PlotData.Head(22);
        using var data1 = PlotData.Data("alpha", 48, seed: 31, expert1, head1);
        using var data2 = PlotData.Data("beta", 48, seed: 32, expert2, head2);
        var landscape = LossLandscapes.Compute(pretrained, expert1, expert2, [ClassificationTask.Of(data1, head1), ClassificationTask.Of(data2, head2)], new LossLandscapeOptions { Resolution = 21 });

        using var taskArithmetic = ModelMerging.TaskArithmetic(pretrained, [expert1, expert2], 0.3);
        using var ties = ModelMerging.Ties(pretrained, [expert1, expert2]);
        using var upscaled = ModelUpscaler.For(pretrained).WithExperts(expert1, expert2).Build();
        var mapAlpha = RoutingAnalysis.AverageRouting(upscaled, data1, 16, ["alpha", "beta"]);
        var mapBeta = RoutingAnalysis.AverageRouting(upscaled, data2, 16, ["alpha", "beta"]);
        var routing = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var a = mapAlpha.ToRoutingVectors();
        var b = mapBeta.ToRoutingVectors();
        foreach (var path in a.Keys)
        {
            routing[path] = (a[path] + b[path]) / 2;
        }
        using var wemoe = upscaled.MergeAndUnload(routing);
        landscape = landscape.WithMarkers(
            LossLandscapes.Project(pretrained, expert1, expert2, taskArithmetic, "task arithmetic"),
            LossLandscapes.Project(pretrained, expert1, expert2, ties, "TIES"),
            LossLandscapes.Project(pretrained, expert1, expert2, wemoe, "WEMoE (average routing)"));
        LossLandscapePlot.SaveAll(landscape, folder, "example-loss-landscape");
        RoutingMapPlot.Save([mapAlpha, mapBeta], Path.Combine(folder, "example-routing-tiny"));

        RoutingMapPlot.Save(FigureTests.SyntheticRouting(layers: 12), Path.Combine(folder, "example-routing-map"));
        ParetoFrontPlot.Save(FigureTests.TwoTaskChart(), Path.Combine(folder, "example-pareto-2"));
        ParetoFrontPlot.Save(ThreeTaskChart(), Path.Combine(folder, "example-pareto-3"));
        AdaptationCurvesPlot.Save(FigureTests.SyntheticCurves(steps: 10), Path.Combine(folder, "example-adaptation-curves"));
    }

    private static ParetoChart ThreeTaskChart()
    {
        var front = new List<ParetoPoint>();
        var baseline = new List<ParetoPoint>();
        for (int i = 0; i <= 4; i++)
        {
            for (int j = 0; i + j <= 4; j++)
            {
                double[] p = [i / 4.0, j / 4.0, (4 - i - j) / 4.0];
                front.Add(new ParetoPoint(p.Select(x => 0.6 + (0.35 * Math.Sqrt(x))).ToArray(), p));
                baseline.Add(new ParetoPoint(p.Select(x => 0.55 + (0.3 * x)).ToArray(), p));
            }
        }

        return new ParetoChart(["alpha", "beta", "gamma"], "accuracy",
        [
            new ParetoSeries("PWEMoE", front, Connect: false),
            new ParetoSeries("task arithmetic", baseline, Connect: false),
            new ParetoSeries("fine-tuned models", [new ParetoPoint([0.97, 0.4, 0.45]), new ParetoPoint([0.42, 0.96, 0.5]), new ParetoPoint([0.44, 0.41, 0.95])], Connect: false),
        ]);
    }
}
