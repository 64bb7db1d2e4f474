using System.Globalization;
using ScottPlot;
using WeightEnsembling.Analysis;
using static WeightEnsembling.Plotting.FigureWriter;

namespace WeightEnsembling.Plotting;

/// <summary>
/// Draws a <see cref="LossLandscape"/>: a heat map of the loss over (λ_1, λ_2) with contour lines, a colour bar and the
/// marked models (pre-trained, fine-tuned, merged) listed in a legend outside the data area.
/// </summary>
public static class LossLandscapePlot
{
    private static readonly MarkerShape[] Shapes =
    [
        MarkerShape.FilledCircle, MarkerShape.FilledSquare, MarkerShape.FilledTriangleUp, MarkerShape.FilledDiamond,
        MarkerShape.FilledTriangleDown, MarkerShape.Cross, MarkerShape.Eks, MarkerShape.Asterisk,
    ];

    /// <summary>
    /// Saves one surface of the landscape as <c>basePath.png</c>, <c>.svg</c> and <c>.csv</c>. The CSV has one <c>grid</c> row
    /// per point (λ_1, λ_2, every task's loss and accuracy, the joint loss) and one <c>marker</c> row per marked model.
    /// </summary>
    /// <param name="landscape">The landscape.</param>
    /// <param name="basePath">The path without extension; its folder is created.</param>
    /// <param name="task">The task whose loss to draw, or <see langword="null"/> for the joint loss (the sum over tasks).</param>
    /// <param name="options">The figure size; <see langword="null"/> for the defaults.</param>
    /// <returns>The three files.</returns>
    public static FigureFiles Save(LossLandscape landscape, string basePath, int? task = null, FigureOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(landscape);
        basePath = CheckBasePath(basePath);
        options ??= new FigureOptions();
        options.Validate();
        var grid = landscape.LossGrid(task);
        string surface = task is int t ? $"loss on {landscape.Tasks[t]}" : $"joint loss ({string.Join(" + ", landscape.Tasks)})";

        var plot = new Plot();
        var xs = landscape.Lambda1Values;
        var ys = landscape.Lambda2Values;
        // Heat map rows run along λ_2 (row 0 at the top), columns along λ_1.
        var intensities = new double[ys.Count, xs.Count];
        var contour = new Coordinates3d[ys.Count, xs.Count];
        for (int i = 0; i < xs.Count; i++)
        {
            for (int j = 0; j < ys.Count; j++)
            {
                intensities[ys.Count - 1 - j, i] = grid[i, j];
                contour[j, i] = new Coordinates3d(xs[i], ys[j], grid[i, j]);
            }
        }

        var heatmap = plot.Add.Heatmap(intensities);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        heatmap.Rectangle = new CoordinateRect(Edge(xs, first: true), Edge(xs, first: false), Edge(ys, first: true), Edge(ys, first: false));
        var colorBar = plot.Add.ColorBar(heatmap);
        colorBar.Label = surface;
        if (xs.Count >= 3 && ys.Count >= 3)
        {
            var lines = plot.Add.ContourLines(contour, 8);
            lines.LineColor = Colors.White.WithAlpha(0.8);
            lines.LineWidth = 1;
            lines.LabelStyle.IsVisible = false;
        }

        for (int m = 0; m < landscape.Markers.Count; m++)
        {
            var marker = landscape.Markers[m];
            var color = Category10(m);
            var shape = Shapes[m % Shapes.Length];
            bool outline = shape is MarkerShape.Cross or MarkerShape.Eks or MarkerShape.Asterisk;
            // A point off the grid (a WEMoE routing far outside the simplex) is pinned to the grid's edge and its true place
            // named in the legend, so the axes stay the landscape's and the marker is not clipped.
            double x = Math.Clamp(marker.Lambda1, xs.Min(), xs.Max());
            double y = Math.Clamp(marker.Lambda2, ys.Min(), ys.Max());
            bool outside = x != marker.Lambda1 || y != marker.Lambda2;
            var drawn = plot.Add.Marker(x, y, shape, outline ? 16 : 12, color);
            // Filled shapes get a black edge; line-only shapes are drawn thick in their own colour (a black cross vanishes on the dark end of the colour map).
            drawn.MarkerLineColor = outline ? color : Colors.Black;
            drawn.MarkerLineWidth = outline ? 3 : 1;
            var notes = new List<string>();
            if (marker.Residual is double r && r > 0.005)
            {
                notes.Add($"off-plane {r:P0}");
            }
            if (outside)
            {
                notes.Add(string.Create(CultureInfo.InvariantCulture, $"off the grid, at ({marker.Lambda1:F2}, {marker.Lambda2:F2})"));
            }
            drawn.LegendText = notes.Count == 0 ? marker.Label : $"{marker.Label} ({string.Join("; ", notes)})";
        }

        plot.Title($"Loss landscape: {surface}");
        plot.XLabel($"λ₁ (task vector of {landscape.Tasks[0]})");
        plot.YLabel(landscape.Tasks.Count > 1 ? $"λ₂ (task vector of {landscape.Tasks[1]})" : "λ₂");
        plot.Axes.Margins(0, 0);
        if (landscape.Markers.Count > 0)
        {
            plot.ShowLegend(ScottPlot.Edge.Right);
        }

        var header = new List<string> { "kind", "label", "lambda1", "lambda2", "residual" };
        foreach (var name in landscape.Tasks)
        {
            header.Add(Quote($"loss {name}"));
            header.Add(Quote($"accuracy {name}"));
        }
        header.Add("joint loss");
        var csv = new System.Text.StringBuilder().AppendLine(CsvLine(header));
        foreach (var point in landscape.Points)
        {
            var cells = new List<string> { "grid", "", Number(point.Lambda1), Number(point.Lambda2), "" };
            foreach (var score in point.Scores)
            {
                cells.Add(Number(score.Loss!.Value));
                cells.Add(Number(score.Accuracy));
            }
            cells.Add(Number(point.JointLoss));
            csv.AppendLine(CsvLine(cells));
        }
        foreach (var marker in landscape.Markers)
        {
            var cells = new List<string> { "marker", Quote(marker.Label), Number(marker.Lambda1), Number(marker.Lambda2), marker.Residual is double r ? Number(r) : "" };
            cells.AddRange(Enumerable.Repeat("", (2 * landscape.Tasks.Count) + 1));
            csv.AppendLine(CsvLine(cells));
        }

        // The legend sits right of the colour bar, one entry per row (at the bottom edge ScottPlot 5.1.59 shows at most five
        // entries: docs/torchsharp-notes.md); the panel is widened by the longest label.
        int legendRoom = landscape.Markers.Count == 0 ? 0 : 60 + (7 * landscape.Markers.Max(m => m.Label.Length + 45));
        var size = new FigureOptions { PanelWidth = options.PanelWidth + legendRoom, PanelHeight = options.PanelHeight, MaxColumns = 1 };
        return FigureWriter.Save([plot], basePath, csv.ToString(), size);
    }

    /// <summary>
    /// Saves the joint-loss surface as <c>{prefix}-joint</c> and each task's as <c>{prefix}-task{t + 1}</c> in
    /// <paramref name="folder"/>: what a benchmark runner writes for one pair of tasks.
    /// </summary>
    /// <param name="landscape">The landscape.</param>
    /// <param name="folder">The output folder; created if missing.</param>
    /// <param name="prefix">The file-name prefix. The default value is <c>loss-landscape</c>.</param>
    /// <param name="options">The figure size; <see langword="null"/> for the defaults.</param>
    /// <returns>The joint figure's files, then each task's.</returns>
    public static IReadOnlyList<FigureFiles> SaveAll(LossLandscape landscape, string folder, string prefix = "loss-landscape", FigureOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(landscape);
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ArgumentException.ThrowIfNullOrWhiteSpace(prefix);
        var files = new List<FigureFiles> { Save(landscape, Path.Combine(folder, $"{prefix}-joint"), null, options) };
        for (int t = 0; t < landscape.Tasks.Count; t++)
        {
            files.Add(Save(landscape, Path.Combine(folder, $"{prefix}-task{t + 1}"), t, options));
        }

        return files;
    }

    internal static Color Category10(int index) => new ScottPlot.Palettes.Category10().GetColor(index);

    private static double Edge(IReadOnlyList<double> values, bool first)
    {
        double step = values.Count > 1 ? (values[^1] - values[0]) / (values.Count - 1) : 1;
        return first ? values[0] - (step / 2) : values[^1] + (step / 2);
    }
}
