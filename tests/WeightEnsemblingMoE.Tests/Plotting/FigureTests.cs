using WeightEnsembling.Analysis;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Plotting;

namespace WeightEnsembling.Tests.Plotting;

[TestFixture, NonParallelizable]
public sealed class FigureTests
{
    private string basePath = null!;

    [SetUp]
    public void SetUp() => basePath = PlotData.TempBase("figure");

    [TearDown]
    public void TearDown() => PlotData.DeleteFolderOf(basePath);

    /// <summary>A 3×3 landscape whose task losses are known functions of (λ_1, λ_2).</summary>
    internal static LossLandscape SyntheticLandscape(int resolution = 3)
    {
        var lambdas = new LossLandscapeOptions { Resolution = resolution }.AxisValues();
        var points = new List<LossLandscapePoint>();
        foreach (double l1 in lambdas)
        {
            foreach (double l2 in lambdas)
            {
                double lossA = 0.2 + Math.Pow(l1 - 0.8, 2) + (0.5 * l2 * l2);
                double lossB = 0.3 + Math.Pow(l2 - 0.7, 2) + (0.4 * l1 * l1) + (0.3 * l1 * l2);
                points.Add(new LossLandscapePoint(l1, l2, [new TaskScore("alpha", Math.Exp(-lossA), lossA), new TaskScore("beta", Math.Exp(-lossB), lossB)]));
            }
        }

        return new LossLandscape(lambdas, lambdas, ["alpha", "beta"], points,
            [new LandscapeMarker("pre-trained", 0, 0, 0), new LandscapeMarker("fine-tuned (alpha)", 1, 0, 0), new LandscapeMarker("fine-tuned (beta)", 0, 1, 0),
             new LandscapeMarker("task arithmetic", 0.3, 0.3, 0), new LandscapeMarker("TIES", 0.42, 0.35, 0.4)]);
    }

    [Test]
    public void LossLandscapeSave_Joint_WritesPngSvgAndCsvOfGridAndMarkers()
    {
        var landscape = SyntheticLandscape();
        var files = LossLandscapePlot.Save(landscape, basePath);
        FigureAssert.IsRendered(files);
        var rows = FigureAssert.Csv(files);
        Assert.That(rows[0], Is.EqualTo(new[] { "kind", "label", "lambda1", "lambda2", "residual", "loss alpha", "accuracy alpha", "loss beta", "accuracy beta", "joint loss" }));
        Assert.That(rows.Count(r => r[0] == "grid"), Is.EqualTo(9));
        Assert.That(rows.Count(r => r[0] == "marker"), Is.EqualTo(5));
        var corner = rows.Single(r => r[0] == "grid" && r[2] == "1" && r[3] == "-1");
        var point = landscape.PointAt(2, 0);
        Assert.That(FigureAssert.Number(corner[5]), Is.EqualTo(point.Scores[0].Loss));
        Assert.That(FigureAssert.Number(corner[9]), Is.EqualTo(point.JointLoss));
        Assert.That(rows.Single(r => r[1] == "TIES")[4], Is.EqualTo("0.4"));
    }

    [Test]
    public void LossLandscapeSaveAll_WritesJointAndEachTask()
    {
        var files = LossLandscapePlot.SaveAll(SyntheticLandscape(), Path.GetDirectoryName(basePath)!, "ll");
        Assert.That(files.Select(f => Path.GetFileName(f.Png)), Is.EqualTo(new[] { "ll-joint.png", "ll-task1.png", "ll-task2.png" }));
        foreach (var figure in files)
        {
            FigureAssert.IsRendered(figure);
        }
    }

    [Test]
    public void LossLandscapeSave_MarkerOffTheGrid_NamesItsPlaceAndKeepsItInCsv()
    {
        var landscape = SyntheticLandscape().WithMarkers(new LandscapeMarker("far WEMoE", 0.25, 1.7, 0.7));
        var files = LossLandscapePlot.Save(landscape, basePath);
        FigureAssert.IsRendered(files);
        var row = FigureAssert.Csv(files).Single(r => r[1] == "far WEMoE");
        Assert.That(FigureAssert.Number(row[2]), Is.EqualTo(0.25));
        Assert.That(FigureAssert.Number(row[3]), Is.EqualTo(1.7));
        Assert.That(File.ReadAllText(files.Svg), Does.Contain("; off the grid, at (0.25, 1.70))"));
        Assert.That(File.ReadAllText(files.Svg), Does.Not.Contain("task arithmetic (off the grid"));
    }

    [Test]
    public void LossLandscapeSave_OverwritesExistingFigure()
    {
        LossLandscapePlot.Save(SyntheticLandscape(), basePath);
        var files = LossLandscapePlot.Save(SyntheticLandscape().WithMarkers(new LandscapeMarker("extra", 0.5, 0.5)), basePath);
        Assert.That(FigureAssert.Csv(files).Count(r => r[0] == "marker"), Is.EqualTo(6));
        FigureAssert.IsRendered(files);
    }

    [Test]
    public void LossLandscape_PointsOutOfOrder_ThrowsNamingPoint()
    {
        var good = SyntheticLandscape();
        var swapped = good.Points.ToList();
        (swapped[0], swapped[1]) = (swapped[1], swapped[0]);
        var ex = Assert.Throws<ArgumentException>(() => new LossLandscape(good.Lambda1Values, good.Lambda2Values, good.Tasks, swapped, []));
        Assert.That(ex!.Message, Does.Contain("Point (0, 0)"));
    }

    internal static ParetoChart TwoTaskChart() => new(["alpha", "beta"], "accuracy",
    [
        ParetoSeries.From("PWEMoE", Enumerable.Range(0, 6).Select(i => i / 5.0).Select(p => (new[] { p, 1 - p }, new[] { 0.6 + (0.35 * Math.Sqrt(p)), 0.6 + (0.35 * Math.Sqrt(1 - p)) }))),
        ParetoSeries.From("task arithmetic", Enumerable.Range(0, 6).Select(i => i / 5.0).Select(p => (new[] { p, 1 - p }, new[] { 0.55 + (0.3 * p), 0.55 + (0.3 * (1 - p)) }))),
        new ParetoSeries("fine-tuned models", [new ParetoPoint([0.97, 0.4]), new ParetoPoint([0.45, 0.96])], Connect: false),
    ]);

    [Test]
    public void ParetoFrontSave_TwoTasks_WritesOneRowPerPoint()
    {
        var chart = TwoTaskChart();
        var files = ParetoFrontPlot.Save(chart, basePath);
        FigureAssert.IsRendered(files);
        var rows = FigureAssert.Csv(files);
        Assert.That(rows[0], Is.EqualTo(new[] { "series", "index", "preference", "accuracy alpha", "accuracy beta" }));
        Assert.That(rows.Count, Is.EqualTo(1 + 6 + 6 + 2));
        var row = rows.Single(r => r[0] == "PWEMoE" && r[1] == "2");
        Assert.That(row[2], Is.EqualTo("0.4;0.6"));
        Assert.That(FigureAssert.Number(row[3]), Is.EqualTo(chart.Series[0].Points[2].Metrics[0]));
        Assert.That(rows.Single(r => r[0] == "fine-tuned models" && r[1] == "1")[2], Is.Empty);
    }

    [Test]
    public void ParetoFrontSave_ThreeTasks_DrawsPairwisePanels()
    {
        var chart = new ParetoChart(["a", "b", "c"], "loss",
        [
            new ParetoSeries("front", [new ParetoPoint([0.1, 0.5, 0.6], [1, 0, 0]), new ParetoPoint([0.5, 0.1, 0.6], [0, 1, 0]), new ParetoPoint([0.5, 0.6, 0.1], [0, 0, 1])]),
        ]);
        var files = ParetoFrontPlot.Save(chart, basePath, new FigureOptions { PanelWidth = 300, PanelHeight = 250 });
        FigureAssert.IsRendered(files);
        Assert.That(File.ReadAllText(files.Svg), Does.Contain("width=\"900\""));
        Assert.That(FigureAssert.Csv(files)[0][^1], Is.EqualTo("loss c"));
    }

    [Test]
    public void ParetoFrontSave_WrongMetricCount_ThrowsNamingSeries()
    {
        var chart = new ParetoChart(["a", "b"], "accuracy", [new ParetoSeries("broken", [new ParetoPoint([0.5])])]);
        var ex = Assert.Throws<ArgumentException>(() => ParetoFrontPlot.Save(chart, basePath));
        Assert.That(ex!.Message, Does.Contain("'broken'").And.Contain("1 metrics"));
    }

    internal static AdaptationCurves SyntheticCurves(int steps = 5) => new(["alpha", "beta", "gamma"],
        new[] { 1e-4, 1e-3, 1e-2 }.Select((lr, r) => new AdaptationRun(lr, Enumerable.Range(0, steps + 1).Select(i => i * 100)
            .Select(s => new AdaptationStep(s, [0.6 + (0.3 * (1 - Math.Exp(-s * (r + 1) / 400.0))), 0.55 + (0.25 * (1 - Math.Exp(-s * (r + 1) / 300.0))), 0.7 + (0.1 * (1 - Math.Exp(-s * (r + 1) / 500.0)))],
                2.0 * Math.Exp(-s * (r + 1) / 350.0) + 0.3)).ToList())).ToList());

    [Test]
    public void AdaptationCurvesSave_WritesOneRowPerRunAndStep()
    {
        var curves = SyntheticCurves();
        var files = AdaptationCurvesPlot.Save(curves, basePath);
        FigureAssert.IsRendered(files);
        var rows = FigureAssert.Csv(files);
        Assert.That(rows[0], Is.EqualTo(new[] { "learning rate", "step", "average accuracy", "entropy loss", "accuracy alpha", "accuracy beta", "accuracy gamma" }));
        Assert.That(rows.Count, Is.EqualTo(1 + (3 * 6)));
        var step = curves.Runs[1].Steps[3];
        var row = rows.Single(r => r[0] == "0.001" && r[1] == "300");
        Assert.That(FigureAssert.Number(row[2]), Is.EqualTo(step.AverageAccuracy));
        Assert.That(FigureAssert.Number(row[3]), Is.EqualTo(step.EntropyLoss));
        Assert.That(FigureAssert.Number(row[6]), Is.EqualTo(step.TaskAccuracies[2]));
    }

    [Test]
    public void AdaptationCurvesSave_StepsOutOfOrder_ThrowsNamingRun()
    {
        var curves = new AdaptationCurves(["a"], [new AdaptationRun(0.01, [new AdaptationStep(5, [0.5], 1), new AdaptationStep(5, [0.6], 0.9)])]);
        var ex = Assert.Throws<ArgumentException>(() => AdaptationCurvesPlot.Save(curves, basePath));
        Assert.That(ex!.Message, Does.Contain("0.01").And.Contain("step 5 after step 5"));
    }

    internal static IReadOnlyList<RoutingMap> SyntheticRouting(int layers = 6)
    {
        string[] experts = ["alpha", "beta", "gamma"];
        var modules = Enumerable.Range(0, layers).Select(l => $"vision_model.encoder.layers.{l}.mlp").ToList();
        return experts.Select((task, t) =>
        {
            var weights = new double[layers, experts.Length];
            for (int l = 0; l < layers; l++)
            {
                for (int e = 0; e < experts.Length; e++)
                {
                    double depth = (double)l / Math.Max(1, layers - 1);
                    weights[l, e] = e == t ? 0.3 + (0.6 * depth) : 0.3 - (0.2 * depth);
                }
            }
            return new RoutingMap(task, modules, experts, weights);
        }).ToList();
    }

    [Test]
    public void RoutingMapSave_WritesOneRowPerTaskModuleAndExpert()
    {
        var maps = SyntheticRouting(layers: 4);
        var files = RoutingMapPlot.Save(maps, basePath);
        FigureAssert.IsRendered(files);
        var rows = FigureAssert.Csv(files);
        Assert.That(rows[0], Is.EqualTo(new[] { "task", "module", "expert", "weight" }));
        Assert.That(rows.Count, Is.EqualTo(1 + (3 * 4 * 3)));
        var row = rows.Single(r => r[0] == "beta" && r[1] == "vision_model.encoder.layers.3.mlp" && r[2] == "beta");
        Assert.That(FigureAssert.Number(row[3]), Is.EqualTo(maps[1][3, 1]));
    }

    [Test]
    public void RoutingMapSave_MismatchedExperts_ThrowsNamingTask()
    {
        var maps = SyntheticRouting(layers: 2).ToList();
        maps.Add(new RoutingMap("odd", maps[0].Modules, ["x", "y", "z"], new double[2, 3]));
        var ex = Assert.Throws<ArgumentException>(() => RoutingMapPlot.Save(maps, basePath));
        Assert.That(ex!.Message, Does.Contain("'odd'"));
    }

    [Test]
    public void Save_PathWithoutFileName_ThrowsNamingPath()
    {
        var folder = Path.GetDirectoryName(basePath)! + Path.DirectorySeparatorChar;
        var ex = Assert.Throws<ArgumentException>(() => LossLandscapePlot.Save(SyntheticLandscape(), folder));
        Assert.That(ex!.Message, Does.Contain("names no file"));
    }
}
