using System.Globalization;
using System.Text;
using ScottPlot;
using static WeightEnsembling.Plotting.FigureWriter;

namespace WeightEnsembling.Plotting;

/// <summary>
/// Draws <see cref="AdaptationCurves"/>: panels for the average accuracy, the entropy loss and each task's accuracy
/// against test-time adaptation steps, one line per learning rate (the same colour in every panel).
/// </summary>
public static class AdaptationCurvesPlot
{
    /// <summary>
    /// Saves the figure as <c>basePath.png</c>, <c>.svg</c> and <c>.csv</c>; the CSV has one row per run and step: learning
    /// rate, step, average accuracy, entropy loss and each task's accuracy.
    /// </summary>
    /// <param name="curves">The curves.</param>
    /// <param name="basePath">The path without extension; its folder is created.</param>
    /// <param name="options">The figure size; <see langword="null"/> for the defaults.</param>
    /// <returns>The three files.</returns>
    public static FigureFiles Save(AdaptationCurves curves, string basePath, FigureOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(curves);
        curves.Validate();
        basePath = CheckBasePath(basePath);
        options ??= new FigureOptions();
        options.Validate();

        var panels = new List<Plot>
        {
            Panel(curves, "Average accuracy", "accuracy (%)", s => 100 * s.AverageAccuracy),
            Panel(curves, "Entropy loss", "entropy loss", s => s.EntropyLoss),
        };
        for (int t = 0; t < curves.Tasks.Count; t++)
        {
            int task = t;
            panels.Add(Panel(curves, $"Accuracy: {curves.Tasks[t]}", "accuracy (%)", s => 100 * s.TaskAccuracies[task]));
        }

        var csv = new StringBuilder();
        csv.AppendLine(CsvLine(new[] { "learning rate", "step", "average accuracy", "entropy loss" }.Concat(curves.Tasks.Select(t => Quote($"accuracy {t}")))));
        foreach (var run in curves.Runs)
        {
            foreach (var step in run.Steps)
            {
                csv.AppendLine(CsvLine(new[] { Number(run.LearningRate), step.Step.ToString(CultureInfo.InvariantCulture), Number(step.AverageAccuracy), Number(step.EntropyLoss) }
                    .Concat(step.TaskAccuracies.Select(Number))));
            }
        }

        return FigureWriter.Save(panels, basePath, csv.ToString(), options);
    }

    private static Plot Panel(AdaptationCurves curves, string title, string yLabel, Func<AdaptationStep, double> value)
    {
        var plot = new Plot();
        for (int r = 0; r < curves.Runs.Count; r++)
        {
            var run = curves.Runs[r];
            var line = plot.Add.Scatter(run.Steps.Select(s => (double)s.Step).ToArray(), run.Steps.Select(value).ToArray(), LossLandscapePlot.Category10(r));
            line.LineWidth = 2;
            line.MarkerSize = 5;
            line.LegendText = $"lr = {run.LearningRate.ToString("G3", CultureInfo.InvariantCulture)}";
        }

        plot.Title(title);
        plot.XLabel("adaptation steps");
        plot.YLabel(yLabel);
        plot.ShowLegend(Edge.Bottom);
        return plot;
    }
}
