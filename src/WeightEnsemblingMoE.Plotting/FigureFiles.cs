namespace WeightEnsembling.Plotting;

/// <summary>The three files of one saved figure, side by side: the picture as PNG and SVG, and its numbers as CSV.</summary>
/// <param name="Png">The PNG file.</param>
/// <param name="Svg">The SVG file.</param>
/// <param name="Csv">The CSV file holding the numbers plotted (invariant culture, header row first).</param>
public sealed record FigureFiles(string Png, string Svg, string Csv);
