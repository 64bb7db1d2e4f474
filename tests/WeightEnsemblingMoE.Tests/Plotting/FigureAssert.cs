using System.Globalization;
using WeightEnsembling.Plotting;

namespace WeightEnsembling.Tests.Plotting;

/// <summary>Checks on saved figures: real PNG and SVG files, and the CSV's numbers.</summary>
internal static class FigureAssert
{
    private static readonly byte[] PngSignature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    public static void IsRendered(FigureFiles files)
    {
        var png = File.ReadAllBytes(files.Png);
        Assert.That(png.Length, Is.GreaterThan(2000), files.Png);
        Assert.That(png.Take(8), Is.EqualTo(PngSignature), files.Png);
        var svg = File.ReadAllText(files.Svg);
        Assert.That(svg, Does.Contain("<svg").And.Contain("</svg>"), files.Svg);
        Assert.That(svg.Length, Is.GreaterThan(2000), files.Svg);
        var folder = Path.GetDirectoryName(files.Png)!;
        Assert.That(Directory.GetFiles(folder, "*.tmp"), Is.Empty, "temporary files left behind");
    }

    public static List<string[]> Csv(FigureFiles files) =>
        File.ReadAllLines(files.Csv).Select(l => l.Split(',')).ToList();

    public static double Number(string cell) => double.Parse(cell, CultureInfo.InvariantCulture);
}
