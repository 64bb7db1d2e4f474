using System.Globalization;
using System.Text;
using ScottPlot;
using SkiaSharp;

namespace WeightEnsembling.Plotting;

/// <summary>Lays panels out in a grid and writes a figure's PNG, SVG and CSV atomically (temp file, then rename).</summary>
internal static class FigureWriter
{
    public static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    public static string Quote(string text) =>
        text.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + text.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : text;

    public static string CsvLine(IEnumerable<string> cells) => string.Join(',', cells);

    public static FigureFiles Save(IReadOnlyList<Plot> panels, string basePath, string csv, FigureOptions options)
    {
        var png = basePath + ".png";
        var svg = basePath + ".svg";
        var csvPath = basePath + ".csv";
        int columns = Math.Min(options.MaxColumns, panels.Count);
        int rows = (panels.Count + columns - 1) / columns;
        int width = columns * options.PanelWidth;
        int height = rows * options.PanelHeight;

        var multiplot = new Multiplot(panels[0]);
        foreach (var panel in panels.Skip(1))
        {
            multiplot.AddPlot(panel);
        }
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Grid(rows, columns);
        var rect = new PixelRect(0, width, height, 0);

        WriteAtomically(png, stream =>
        {
            using var surface = SKSurface.Create(new SKImageInfo(width, height)) ?? throw new InvalidOperationException($"SkiaSharp could not create a {width}×{height} surface for '{png}'.");
            surface.Canvas.Clear(SKColors.White);
            multiplot.Render(surface.Canvas, rect);
            using var image = surface.Snapshot();
            using var data = image.Encode(SKEncodedImageFormat.Png, 100) ?? throw new InvalidOperationException($"SkiaSharp could not encode '{png}'.");
            data.SaveTo(stream);
        });
        WriteAtomically(svg, stream =>
        {
            using (var canvas = SKSvgCanvas.Create(new SKRect(0, 0, width, height), stream))
            {
                canvas.Clear(SKColors.White);
                multiplot.Render(canvas, rect);
            }
        });
        WriteAtomically(csvPath, stream =>
        {
            var bytes = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(csv);
            stream.Write(bytes);
        });
        return new FigureFiles(png, svg, csvPath);
    }

    public static string CheckBasePath(string basePath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(basePath);
        var full = Path.GetFullPath(basePath);
        var folder = Path.GetDirectoryName(full);
        if (folder is null || Path.GetFileName(full).Length == 0)
        {
            throw new ArgumentException($"'{basePath}' names no file: give a path such as 'figures/landscape' (the extensions are added).", nameof(basePath));
        }
        Directory.CreateDirectory(folder);
        return full;
    }

    private static void WriteAtomically(string path, Action<Stream> write)
    {
        var temp = Path.Combine(Path.GetDirectoryName(path)!, "." + Path.GetFileName(path) + "." + Guid.NewGuid().ToString("N") + ".tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }
}
