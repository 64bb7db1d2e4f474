using System.Globalization;
using System.Text;
using ScottPlot;
using WeightEnsembling.Analysis;
using static WeightEnsembling.Plotting.FigureWriter;

namespace WeightEnsembling.Plotting;

/// <summary>
/// Draws routing maps (<see cref="RoutingMap"/>, from <see cref="RoutingAnalysis.AverageRouting"/>): one heat-map panel per
/// task, layers (modules) down, experts across, every panel on the same colour scale, each cell labelled with its weight
/// when the map is small enough to read.
/// </summary>
public static class RoutingMapPlot
{
    private const string LayerPrefix = "vision_model.encoder.layers.";

    /// <summary>
    /// Saves the maps as <c>basePath.png</c>, <c>.svg</c> and <c>.csv</c>; the CSV has one row per task, module and expert.
    /// </summary>
    /// <param name="maps">One map per task, all with the same modules and experts.</param>
    /// <param name="basePath">The path without extension; its folder is created.</param>
    /// <param name="options">The figure size; <see langword="null"/> for the defaults.</param>
    /// <returns>The three files.</returns>
    /// <exception cref="ArgumentException">No map, or maps with different modules or experts.</exception>
    public static FigureFiles Save(IReadOnlyList<RoutingMap> maps, string basePath, FigureOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(maps);
        if (maps.Count == 0 || maps.Any(m => m is null))
        {
            throw new ArgumentException("Routing maps need at least one map and no null map.", nameof(maps));
        }
        var first = maps[0];
        var odd = maps.FirstOrDefault(m => !m.Modules.SequenceEqual(first.Modules) || !m.Experts.SequenceEqual(first.Experts));
        if (odd is not null)
        {
            throw new ArgumentException($"The routing map of task '{odd.Task}' has other modules or experts than that of task '{first.Task}'.", nameof(maps));
        }
        basePath = CheckBasePath(basePath);
        options ??= new FigureOptions();
        options.Validate();

        double max = Math.Max(1e-12, maps.Max(m => m.ToArray().Cast<double>().Max()));
        double min = Math.Min(0, maps.Min(m => m.ToArray().Cast<double>().Min()));
        var panels = maps.Select(m => Panel(m, min, max)).ToList();

        var csv = new StringBuilder();
        csv.AppendLine("task,module,expert,weight");
        foreach (var map in maps)
        {
            for (int r = 0; r < map.Modules.Count; r++)
            {
                for (int e = 0; e < map.Experts.Count; e++)
                {
                    csv.AppendLine(CsvLine([Quote(map.Task), Quote(map.Modules[r]), Quote(map.Experts[e]), Number(map[r, e])]));
                }
            }
        }

        return FigureWriter.Save(panels, basePath, csv.ToString(), options);
    }

    /// <summary>A short row label: <c>vision_model.encoder.layers.3.mlp</c> becomes <c>3.mlp</c>.</summary>
    /// <param name="modulePath">The module path.</param>
    /// <returns>The label.</returns>
    public static string ShortModuleName(string modulePath)
    {
        ArgumentNullException.ThrowIfNull(modulePath);
        return modulePath.StartsWith(LayerPrefix, StringComparison.Ordinal) ? modulePath[LayerPrefix.Length..] : modulePath;
    }

    private static Plot Panel(RoutingMap map, double min, double max)
    {
        int rows = map.Modules.Count;
        int columns = map.Experts.Count;
        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(map.ToArray());
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        heatmap.ManualRange = new ScottPlot.Range(min, max);
        // Cell (r, e) centred on (e, rows − 1 − r): the first module on top.
        heatmap.Rectangle = new CoordinateRect(-0.5, columns - 0.5, -0.5, rows - 0.5);
        var colorBar = plot.Add.ColorBar(heatmap);
        colorBar.Label = "mean routing weight";

        if (rows * columns <= 120)
        {
            for (int r = 0; r < rows; r++)
            {
                for (int e = 0; e < columns; e++)
                {
                    double value = map[r, e];
                    var text = plot.Add.Text(value.ToString("0.00", CultureInfo.InvariantCulture), e, rows - 1 - r);
                    text.LabelAlignment = Alignment.MiddleCenter;
                    text.LabelFontSize = 12;
                    text.LabelFontColor = (value - min) / (max - min) > 0.6 ? Colors.Black : Colors.White;
                }
            }
        }

        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, columns).Select(e => (double)e).ToArray(), map.Experts.ToArray());
        plot.Axes.Left.SetTicks(Enumerable.Range(0, rows).Select(r => (double)(rows - 1 - r)).ToArray(), map.Modules.Select(ShortModuleName).ToArray());
        int longest = map.Experts.Max(e => e.Length);
        if (longest * columns > 60)
        {
            // Names that would run into each other are wrapped at their hyphens, with room for the extra lines.
            var wrapped = map.Experts.Select(Wrap).ToArray();
            plot.Axes.Bottom.SetTicks(Enumerable.Range(0, columns).Select(e => (double)e).ToArray(), wrapped);
            plot.Axes.Bottom.MinimumSize = 30 + (16 * wrapped.Max(w => w.Count(ch => ch == '\n') + 1));
        }

        plot.Axes.Margins(0, 0);
        plot.Title($"Routing on {map.Task}");
        plot.XLabel("expert");
        plot.YLabel("layer");
        return plot;
    }

    // Greedy wrap at hyphens into lines of at most 10 characters (a word longer than that stays whole).
    private static string Wrap(string name)
    {
        var lines = new List<string>();
        var line = new StringBuilder();
        foreach (var part in name.Split('-'))
        {
            string piece = line.Length == 0 ? part : "-" + part;
            if (line.Length > 0 && line.Length + piece.Length > 10)
            {
                lines.Add(line.ToString());
                line.Clear().Append(piece);
            }
            else
            {
                line.Append(piece);
            }
        }

        lines.Add(line.ToString());
        return string.Join('\n', lines);
    }
}
