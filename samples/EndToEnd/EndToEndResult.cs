using System.Globalization;
using WeightEnsembling.Evaluation;

namespace EndToEnd;

/// <summary>The evaluation reports of one run of <see cref="EndToEndPipeline.Run"/>, in the order run.</summary>
/// <param name="Reports">Zero-shot, individual experts, WEMoE before and after adaptation.</param>
/// <param name="SkippedImages">Images the loaders could not decode (0 for the shipped assets).</param>
public sealed record EndToEndResult(IReadOnlyList<EvaluationReport> Reports, long SkippedImages)
{
    /// <summary>Prints a table: one row per method, one column per task, the average last.</summary>
    /// <param name="output">The writer.</param>
    public void PrintTable(TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var tasks = Reports[0].Scores.Select(s => s.Task).ToList();
        int width = Reports.Max(r => r.Method.Length);
        output.WriteLine($"{"method".PadRight(width)} | {string.Join(" | ", tasks.Select(t => t.PadLeft(7)))} | average");
        output.WriteLine($"{new string('-', width)} | {string.Join(" | ", tasks.Select(_ => "------:"))} | ------:");
        foreach (var report in Reports)
        {
            var cells = tasks.Select(t => Percent(report.Scores.First(s => s.Task == t).Accuracy).PadLeft(7));
            output.WriteLine($"{report.Method.PadRight(width)} | {string.Join(" | ", cells)} | {Percent(report.AverageAccuracy).PadLeft(7)}");
        }
    }

    private static string Percent(double accuracy) => string.Create(CultureInfo.InvariantCulture, $"{accuracy * 100:F1}%");
}
