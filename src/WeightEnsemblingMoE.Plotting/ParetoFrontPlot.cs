using System.Text;
using ScottPlot;
using static WeightEnsembling.Plotting.FigureWriter;

namespace WeightEnsembling.Plotting;

/// <summary>
/// Draws a <see cref="ParetoChart"/>: for two tasks one panel (task 1's metric against task 2's), for more tasks one panel
/// per pair of tasks. Series that connect are joined by a line on two-task charts; single models are markers.
/// </summary>
public static class ParetoFrontPlot
{
    private static readonly MarkerShape[] Shapes =
        [MarkerShape.FilledCircle, MarkerShape.FilledSquare, MarkerShape.FilledTriangleUp, MarkerShape.FilledDiamond, MarkerShape.FilledTriangleDown];

    /// <summary>
    /// Saves the chart as <c>basePath.png</c>, <c>.svg</c> and <c>.csv</c>; the CSV has one row per point: series,
    /// index, preference (semicolon-separated, empty for none) and the metric per task.
    /// </summary>
    /// <param name="chart">The chart data.</param>
    /// <param name="basePath">The path without extension; its folder is created.</param>
    /// <param name="options">The figure size; <see langword="null"/> for the defaults.</param>
    /// <returns>The three files.</returns>
    public static FigureFiles Save(ParetoChart chart, string basePath, FigureOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(chart);
        chart.Validate();
        basePath = CheckBasePath(basePath);
        options ??= new FigureOptions();
        options.Validate();

        var panels = new List<Plot>();
        for (int a = 0; a < chart.Tasks.Count; a++)
        {
            for (int b = a + 1; b < chart.Tasks.Count; b++)
            {
                panels.Add(Panel(chart, a, b));
            }
        }

        var csv = new StringBuilder();
        csv.AppendLine(CsvLine(new[] { "series", "index", "preference" }.Concat(chart.Tasks.Select(t => Quote($"{chart.MetricName} {t}")))));
        foreach (var series in chart.Series)
        {
            for (int p = 0; p < series.Points.Count; p++)
            {
                var point = series.Points[p];
                var preference = point.Preference is null ? "" : string.Join(';', point.Preference.Select(Number));
                csv.AppendLine(CsvLine(new[] { Quote(series.Label), p.ToString(System.Globalization.CultureInfo.InvariantCulture), preference }.Concat(point.Metrics.Select(Number))));
            }
        }

        return FigureWriter.Save(panels, basePath, csv.ToString(), options);
    }

    private static Plot Panel(ParetoChart chart, int a, int b)
    {
        var plot = new Plot();
        for (int s = 0; s < chart.Series.Count; s++)
        {
            var series = chart.Series[s];
            var color = LossLandscapePlot.Category10(s);
            var points = series.Points.Select(p => (X: p.Metrics[a], Y: p.Metrics[b])).ToList();
            if (series.Connect && chart.Tasks.Count == 2)
            {
                points = points.OrderBy(p => p.X).ThenByDescending(p => p.Y).ToList();
            }
            var scatter = plot.Add.Scatter(points.Select(p => p.X).ToArray(), points.Select(p => p.Y).ToArray(), color);
            scatter.LineWidth = series.Connect && chart.Tasks.Count == 2 ? 2 : 0;
            scatter.MarkerShape = Shapes[s % Shapes.Length];
            scatter.MarkerSize = series.Connect ? 7 : 12;
            scatter.LegendText = series.Label;
        }

        plot.XLabel($"{chart.MetricName}: {chart.Tasks[a]}");
        plot.YLabel($"{chart.MetricName}: {chart.Tasks[b]}");
        plot.Title(chart.Tasks.Count == 2 ? "Pareto front" : $"Pareto front: {chart.Tasks[a]} vs {chart.Tasks[b]}");
        plot.Axes.Margins(0.1, 0.1);
        plot.ShowLegend(Edge.Bottom);
        return plot;
    }
}
