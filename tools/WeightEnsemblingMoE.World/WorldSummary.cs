using System.Globalization;
using System.Text;

namespace WeightEnsembling.World;

/// <summary>The zoo's figures: per task zero-shot and expert accuracy, their averages, and the pre-training loss at its start and end (mean of the last tenth of the steps).</summary>
public sealed record WorldSummary(IReadOnlyList<WorldTaskResult> Tasks, double ZeroShotAverage, double ExpertAverage, float PretrainFirstLoss, float PretrainLastLoss)
{
    /// <summary>A Markdown table of the figures.</summary>
    public string ToMarkdown()
    {
        var text = new StringBuilder();
        text.AppendLine("| task | classes | zero-shot (%) | expert (%) | gain |");
        text.AppendLine("| --- | ---: | ---: | ---: | ---: |");
        foreach (var t in Tasks)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"| {t.Task} | {t.Classes} | {t.ZeroShot:F1} | {t.Expert:F1} | {t.Expert - t.ZeroShot:+0.0;-0.0} |");
        }

        text.AppendLine(CultureInfo.InvariantCulture, $"| average | | {ZeroShotAverage:F1} | {ExpertAverage:F1} | {ExpertAverage - ZeroShotAverage:+0.0;-0.0} |");
        text.AppendLine().AppendLine(CultureInfo.InvariantCulture, $"Pre-training contrastive loss: {PretrainFirstLoss:F3} at the first step, {PretrainLastLoss:F3} over the last tenth.");
        return text.ToString();
    }
}
