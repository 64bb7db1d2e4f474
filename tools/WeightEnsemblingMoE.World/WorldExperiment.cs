using System.Globalization;
using System.Text;
using System.Text.Json;
using WeightEnsembling.Experiments;
using WeightEnsembling.Moe;

namespace WeightEnsembling.World;

/// <summary>
/// Issue 17's tables on a built world: every method of the merging benchmark, then WEMoE (2-layer) under both published
/// recipes (FusionBench's: batch-reduced routing in training, lr 1e-4, constant, heads on θ_0's projection; the original
/// repository's: per-sample routing, lr 1e-3 with cosine annealing over 1,000 steps, heads on the merged projection), each
/// started at the papers' λ = 0.3 and at the λ validation picks for task arithmetic.
/// </summary>
public static class WorldExperiment
{
    /// <summary>Runs the tables; returns the rows (method label, per-task and average accuracy in percent, parameters, time, detail).</summary>
    /// <param name="zoo">The world.</param>
    /// <param name="steps">Test-time adaptation steps of every adapted method.</param>
    /// <param name="methods">The methods of the first table; <see langword="null"/> for all.</param>
    /// <param name="recipes">Whether to run the four WEMoE recipe rows.</param>
    /// <param name="log">Receives a line per phase.</param>
    public static List<Dictionary<string, object?>> Run(WorldZoo zoo, int steps, IReadOnlyList<MergingMethod>? methods, bool recipes, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(zoo);
        ArgumentNullException.ThrowIfNull(log);
        var c = CultureInfo.InvariantCulture;
        var rows = new List<Dictionary<string, object?>>();
        var progress = new Progress<string>(line => log(line));
        var fusionBench = new MergingBenchmarkOptions
        {
            AdaptationSteps = steps,
            WemoePretrainedProjection = true,
            Methods = methods ?? Enum.GetValues<MergingMethod>(),
        };
        foreach (var r in MergingBenchmark.Run(zoo.Pretrained, zoo.Experts, zoo.Tasks, fusionBench, progress))
        {
            rows.Add(Row(r.Report.Method, r));
        }

        if (!recipes)
        {
            return rows;
        }

        var (lambda, _) = MergingBenchmark.TaskArithmeticLambda(zoo.Pretrained, zoo.Experts, zoo.Tasks, fusionBench);
        foreach (double? init in new double?[] { null, lambda })
        {
            var fb = new MergingBenchmarkOptions
            {
                AdaptationSteps = steps,
                Methods = [MergingMethod.Wemoe],
                WemoePretrainedProjection = true,
                WemoeInitLambda = init,
            };
            var original = new MergingBenchmarkOptions
            {
                AdaptationSteps = steps,
                Methods = [MergingMethod.Wemoe],
                WemoeTrainingRouting = RoutingMode.PerSample,
                WemoeLearningRate = 1e-3,
                WemoeCosineSteps = 1000,
                WemoeInitLambda = init,
            };
            string start = string.Create(c, $"λ0 = {init ?? 0.3}{(init is null ? " (papers)" : " (task arithmetic's, on validation)")}");
            foreach (var (recipe, options) in new[] { ("FusionBench recipe", fb), ("original recipe", original) })
            {
                var r = MergingBenchmark.Run(zoo.Pretrained, zoo.Experts, zoo.Tasks, options, progress).Single();
                rows.Add(Row($"WEMoE (2-layer), {recipe}, {start}", r));
            }
        }

        return rows;
    }

    /// <summary>
    /// Item 6: WEMoE (2-layer, FusionBench's recipe as in <see cref="Run"/>) without and with each safeguard
    /// (<see cref="SafeguardStudy"/>); rows as <see cref="Run"/> gives them.
    /// </summary>
    /// <param name="zoo">The world.</param>
    /// <param name="steps">Test-time adaptation steps.</param>
    /// <param name="log">Receives a line per phase.</param>
    public static List<Dictionary<string, object?>> RunSafeguards(WorldZoo zoo, int steps, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(zoo);
        ArgumentNullException.ThrowIfNull(log);
        var results = SafeguardStudy.Run(zoo.Pretrained, zoo.Experts, zoo.Tasks, o =>
        {
            o.AdaptationSteps = steps;
            o.WemoePretrainedProjection = true;
        }, new Progress<string>(line => log(line)));
        return results.Select(r => Row(r.Label, r.Result)).ToList();
    }

    /// <summary>The rows as Markdown: accuracy table, then parameters and times.</summary>
    public static string ToMarkdown(IReadOnlyList<Dictionary<string, object?>> rows, IReadOnlyList<string> tasks)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(tasks);
        var c = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine("| method | " + string.Join(" | ", tasks) + " | average |");
        md.AppendLine("| --- |" + string.Concat(Enumerable.Repeat(" ---: |", tasks.Count + 1)));
        foreach (var row in rows)
        {
            var accuracies = (Dictionary<string, double>)row["tasks"]!;
            md.AppendLine(c, $"| {row["method"]} | {string.Join(" | ", tasks.Select(t => accuracies[t].ToString("F1", c)))} | **{(double)row["average"]!:F1}** |");
        }

        md.AppendLine().AppendLine("| method | trainable | total | time (s) | detail |").AppendLine("| --- | ---: | ---: | ---: | --- |");
        foreach (var row in rows)
        {
            md.AppendLine(c, $"| {row["method"]} | {row["trainable"] ?? "-"} | {row["total"] ?? "-"} | {(double)row["seconds"]!:F0} | {row["detail"]} |");
        }

        return md.ToString();
    }

    /// <summary>The rows as indented JSON.</summary>
    public static string ToJson(IReadOnlyList<Dictionary<string, object?>> rows) =>
        JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true });

    internal static Dictionary<string, object?> Row(string label, MethodResult r) => new()
    {
        ["method"] = label,
        ["tasks"] = r.Report.Scores.ToDictionary(s => s.Task, s => Math.Round(100 * s.Accuracy, 2)),
        ["average"] = Math.Round(100 * r.Report.AverageAccuracy, 2),
        ["trainable"] = r.Parameters?.Trainable,
        ["total"] = r.Parameters?.Total,
        ["seconds"] = Math.Round(r.Elapsed.TotalSeconds, 1),
        ["detail"] = r.Detail,
    };
}
