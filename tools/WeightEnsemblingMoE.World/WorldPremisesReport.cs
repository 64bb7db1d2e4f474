using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace WeightEnsembling.World;

/// <summary>The premises of issue 17 measured on a built world, with the figures behind them (accuracies in percent).</summary>
public sealed record WorldPremisesReport
{
    /// <summary>The task names, in order.</summary>
    public required IReadOnlyList<string> Tasks { get; init; }

    /// <summary>The pre-trained model's zero-shot test accuracy per task.</summary>
    public required IReadOnlyList<double> ZeroShot { get; init; }

    /// <summary>Each expert's test accuracy on its own task.</summary>
    public required IReadOnlyList<double> Individual { get; init; }

    /// <summary>The λ validation picks for task arithmetic, and that merge's test accuracy per task.</summary>
    public required double TaskArithmeticLambda { get; init; }

    /// <summary>Task arithmetic's test accuracy per task at <see cref="TaskArithmeticLambda"/>.</summary>
    public required IReadOnlyList<double> TaskArithmetic { get; init; }

    /// <summary>Test accuracy of the linear probe that reads the token-averaged input of each layer's MLP (task-arithmetic model) and names the image's task.</summary>
    public required IReadOnlyList<double> ProbeAccuracy { get; init; }

    /// <summary>The last layer's probe confusion matrix: percent of each true task's test images ([true][predicted]) named as each task.</summary>
    public required IReadOnlyList<double[]> ProbeConfusion { get; init; }

    /// <summary>Oracle routing (every MLP one-hot to the image's own expert, the rest task arithmetic at <see cref="TaskArithmeticLambda"/>): test accuracy per task.</summary>
    public required IReadOnlyList<double> Oracle { get; init; }

    /// <summary>Oracle routing with the rest merged at the papers' λ = 0.3.</summary>
    public required IReadOnlyList<double> OraclePapersLambda { get; init; }

    /// <summary>
    /// Oracle routing with one more group of parameters (attention, layer norms, embeddings and pre-norm, post-norm and
    /// projection) from the own expert: test accuracy per task, by group (where the oracle's gap lies).
    /// </summary>
    public IReadOnlyDictionary<string, IReadOnlyList<double>> OracleAttribution { get; init; } = new Dictionary<string, IReadOnlyList<double>>();

    /// <summary>The premises.</summary>
    public required IReadOnlyList<PremiseCheck> Premises { get; init; }

    /// <summary>Whether every premise holds.</summary>
    public bool AllHold => Premises.All(p => p.Holds);

    /// <summary>The report as indented JSON (camel case).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    });

    /// <summary>The report as Markdown tables.</summary>
    public string ToMarkdown()
    {
        var c = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine("| premise | measure | value | threshold | holds |").AppendLine("| --- | --- | ---: | --- | --- |");
        foreach (var p in Premises)
        {
            md.AppendLine(c, $"| {p.Premise} | {p.Measure} | {p.Value:F1} | {p.Threshold} | {(p.Holds ? "yes" : "**no**")} |");
        }

        md.AppendLine().AppendLine(c, $"| task | zero-shot | expert | expert − zero-shot | task arithmetic (λ = {TaskArithmeticLambda}) | oracle routing | oracle, rest at λ = 0.3 |");
        md.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (int i = 0; i < Tasks.Count; i++)
        {
            md.AppendLine(c, $"| {Tasks[i]} | {ZeroShot[i]:F1} | {Individual[i]:F1} | {Individual[i] - ZeroShot[i]:+0.0;−0.0} | {TaskArithmetic[i]:F1} | {Oracle[i]:F1} | {OraclePapersLambda[i]:F1} |");
        }

        md.AppendLine(c, $"| **average** | **{ZeroShot.Average():F1}** | **{Individual.Average():F1}** | | **{TaskArithmetic.Average():F1}** | **{Oracle.Average():F1}** | **{OraclePapersLambda.Average():F1}** |");
        md.AppendLine().AppendLine("Task probe on the token-averaged MLP input of the task-arithmetic model (test accuracy, %): "
            + string.Join(", ", ProbeAccuracy.Select((a, l) => string.Create(c, $"layer {l}: {a:F1}"))) + ".");
        if (ProbeConfusion.Count == Tasks.Count)
        {
            md.AppendLine().AppendLine("Last layer's probe: percent of each task's test images (rows) named as each task (columns):").AppendLine();
            md.AppendLine("| task | " + string.Join(" | ", Tasks) + " |").AppendLine("| --- |" + string.Concat(Enumerable.Repeat(" ---: |", Tasks.Count)));
            for (int i = 0; i < Tasks.Count; i++)
            {
                md.AppendLine(c, $"| {Tasks[i]} | {string.Join(" | ", ProbeConfusion[i].Select(v => v.ToString("F0", c)))} |");
            }
        }

        if (OracleAttribution.Count > 0)
        {
            md.AppendLine().AppendLine("Where the oracle's gap lies: oracle routing with one more group of parameters from the image's own expert instead of the merge (test accuracy, %):").AppendLine();
            md.AppendLine("| also from the own expert | " + string.Join(" | ", Tasks) + " | average |").AppendLine("| --- |" + string.Concat(Enumerable.Repeat(" ---: |", Tasks.Count + 1)));
            md.AppendLine(c, $"| nothing (oracle routing) | {string.Join(" | ", Oracle.Select(v => v.ToString("F1", c)))} | {Oracle.Average():F1} |");
            foreach (var (group, accuracy) in OracleAttribution)
            {
                md.AppendLine(c, $"| {group} | {string.Join(" | ", accuracy.Select(v => v.ToString("F1", c)))} | {accuracy.Average():F1} |");
            }

            md.AppendLine(c, $"| everything (the expert) | {string.Join(" | ", Individual.Select(v => v.ToString("F1", c)))} | {Individual.Average():F1} |");
        }

        return md.ToString();
    }
}
