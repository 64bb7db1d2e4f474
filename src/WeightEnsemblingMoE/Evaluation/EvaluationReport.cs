using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace WeightEnsembling.Evaluation;

/// <summary>
/// The accuracy of one merging method on each task, with their average, as reported in the model-merging papers.
/// Renders as a Markdown or plain-text table (tasks as columns, the average last, percentages with one decimal) and
/// round-trips through JSON.
/// </summary>
public sealed record EvaluationReport
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };

    /// <summary>Creates a report.</summary>
    /// <param name="method">The method name (a table row label), not empty.</param>
    /// <param name="scores">One score per task, with distinct task names, at least one.</param>
    /// <param name="elapsed">The time the evaluation (or the merge and evaluation) took, or <see langword="null"/>.</param>
    /// <exception cref="ArgumentException">The method name is empty, there are no scores, or a task appears twice.</exception>
    [JsonConstructor]
    public EvaluationReport(string method, IReadOnlyList<TaskScore> scores, TimeSpan? elapsed = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(method);
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Count == 0)
        {
            throw new ArgumentException($"Report '{method}' needs at least one task score.", nameof(scores));
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var score in scores)
        {
            if (score is null)
            {
                throw new ArgumentException($"Report '{method}' has a null task score.", nameof(scores));
            }
            if (!seen.Add(score.Task))
            {
                throw new ArgumentException($"Report '{method}' lists task '{score.Task}' twice.", nameof(scores));
            }
        }
        Method = method;
        Scores = scores.ToArray();
        Elapsed = elapsed;
    }

    /// <summary>The method name.</summary>
    public string Method { get; }

    /// <summary>The per-task scores, in column order.</summary>
    public IReadOnlyList<TaskScore> Scores { get; }

    /// <summary>The time taken, or <see langword="null"/>.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public TimeSpan? Elapsed { get; }

    /// <summary>The mean accuracy over the tasks, as a fraction.</summary>
    [JsonIgnore]
    public double AverageAccuracy => Scores.Average(s => s.Accuracy);

    /// <summary>Renders this report as a one-row Markdown table.</summary>
    /// <returns>The table.</returns>
    public string ToMarkdown() => ToMarkdown([this]);

    /// <summary>Renders this report as a one-row plain-text table.</summary>
    /// <returns>The table.</returns>
    public string ToPlainText() => ToPlainText([this]);

    /// <summary>
    /// Renders several reports as one Markdown table: a row per method, a column per task (in order of first
    /// appearance), the average last; accuracies as percentages with one decimal, "-" where a method lacks a task.
    /// </summary>
    /// <param name="reports">The reports, at least one.</param>
    /// <returns>The table, one line per row.</returns>
    public static string ToMarkdown(IEnumerable<EvaluationReport> reports)
    {
        var (header, rows) = Cells(reports);
        var builder = new StringBuilder();
        builder.Append("| ").AppendJoin(" | ", header).Append(" |\n");
        builder.Append("|---").Append(string.Concat(Enumerable.Repeat("|---:", header.Count - 1))).Append("|\n");
        foreach (var row in rows)
        {
            builder.Append("| ").AppendJoin(" | ", row).Append(" |\n");
        }
        return builder.ToString();
    }

    /// <summary>Renders several reports as one plain-text table with aligned columns (same content as <see cref="ToMarkdown(IEnumerable{EvaluationReport})"/>).</summary>
    /// <param name="reports">The reports, at least one.</param>
    /// <returns>The table, one line per row.</returns>
    public static string ToPlainText(IEnumerable<EvaluationReport> reports)
    {
        var (header, rows) = Cells(reports);
        var widths = header.Select((h, i) => Math.Max(h.Length, rows.Max(r => r[i].Length))).ToArray();
        var builder = new StringBuilder();
        foreach (var line in rows.Prepend(header))
        {
            for (int i = 0; i < line.Count; i++)
            {
                if (i > 0)
                {
                    builder.Append("  ");
                }
                builder.Append(i == 0 ? line[i].PadRight(widths[i]) : line[i].PadLeft(widths[i]));
            }
            builder.Append('\n');
        }
        return builder.ToString();
    }

    /// <summary>Serialises the report to indented JSON (camelCase names; accuracies as fractions).</summary>
    /// <returns>The JSON text.</returns>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Reads a report written by <see cref="ToJson"/>.</summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The report.</returns>
    /// <exception cref="JsonException">The text is not a valid report; the message says what is wrong.</exception>
    public static EvaluationReport FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            return JsonSerializer.Deserialize<EvaluationReport>(json, JsonOptions)
                ?? throw new JsonException("The JSON text holds null, not an evaluation report.");
        }
        catch (ArgumentException e)
        {
            throw new JsonException($"The JSON text is not a valid evaluation report: {e.Message}", e);
        }
    }

    /// <summary>Writes <see cref="ToJson"/> to <paramref name="path"/> atomically (a temporary file in the same folder, then a rename).</summary>
    /// <param name="path">The file path.</param>
    public void SaveJson(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        string full = Path.GetFullPath(path);
        string temporary = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllText(temporary, ToJson(), new UTF8Encoding(false));
            File.Move(temporary, full, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
    }

    /// <summary>Reads a report saved by <see cref="SaveJson"/>.</summary>
    /// <param name="path">The file path.</param>
    /// <returns>The report.</returns>
    /// <exception cref="JsonException">The file is not a valid report; the message names the file.</exception>
    public static EvaluationReport LoadJson(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        try
        {
            return FromJson(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new JsonException($"File '{path}' is not a valid evaluation report: {e.Message}", e);
        }
    }

    /// <summary>Compares method, scores (element by element) and elapsed time.</summary>
    /// <param name="other">The other report.</param>
    /// <returns>Whether the reports are equal.</returns>
    public bool Equals(EvaluationReport? other) =>
        other is not null && Method == other.Method && Elapsed == other.Elapsed && Scores.SequenceEqual(other.Scores);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Method, Scores.Count, Elapsed);

    private static (IReadOnlyList<string> Header, List<IReadOnlyList<string>> Rows) Cells(IEnumerable<EvaluationReport> reports)
    {
        ArgumentNullException.ThrowIfNull(reports);
        var list = reports.ToList();
        if (list.Count == 0)
        {
            throw new ArgumentException("At least one report is needed to render a table.", nameof(reports));
        }
        var tasks = list.SelectMany(r => r.Scores.Select(s => s.Task)).Distinct(StringComparer.Ordinal).ToList();
        var header = new List<string> { "Method" };
        header.AddRange(tasks);
        header.Add("Avg.");
        var rows = new List<IReadOnlyList<string>>();
        foreach (var report in list)
        {
            if (report is null)
            {
                throw new ArgumentException("The reports contain null.", nameof(reports));
            }
            var row = new List<string> { report.Method };
            foreach (var task in tasks)
            {
                var score = report.Scores.FirstOrDefault(s => s.Task == task);
                row.Add(score is null ? "-" : Percent(score.Accuracy));
            }
            row.Add(Percent(report.AverageAccuracy));
            rows.Add(row);
        }
        return (header, rows);
    }

    private static string Percent(double fraction) => (fraction * 100).ToString("F1", CultureInfo.InvariantCulture);
}
