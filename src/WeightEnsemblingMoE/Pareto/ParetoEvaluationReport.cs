using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using WeightEnsembling.SafeTensors;

namespace WeightEnsembling.Pareto;

/// <summary>
/// The evaluation of a Pareto set on a grid of preferences: per-point, per-task accuracy and loss, the non-dominated subset
/// (by accuracy) and the hypervolume of the accuracy front against <see cref="ReferencePoint"/>.
/// </summary>
public sealed record ParetoEvaluationReport
{
    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    /// <summary>Creates a report.</summary>
    /// <param name="method">The method name (e.g. <c>PWEMoE-LS</c>).</param>
    /// <param name="tasks">The task names, in task order.</param>
    /// <param name="points">The evaluated points.</param>
    /// <param name="referencePoint">The hypervolume reference, one accuracy per task; <see langword="null"/> means all zeros.</param>
    /// <exception cref="ArgumentException">A point's lengths differ from the task count.</exception>
    public ParetoEvaluationReport(string method, IReadOnlyList<string> tasks, IReadOnlyList<ParetoPoint> points, IReadOnlyList<double>? referencePoint = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(method);
        ArgumentNullException.ThrowIfNull(tasks);
        ArgumentNullException.ThrowIfNull(points);
        foreach (var point in points)
        {
            if (point.Preference.Count != tasks.Count || point.Accuracies.Count != tasks.Count || point.Losses.Count != tasks.Count)
            {
                throw new ArgumentException($"Every point needs {tasks.Count} preference entries, accuracies and losses.", nameof(points));
            }
        }

        Method = method;
        Tasks = tasks.ToArray();
        Points = points.ToArray();
        ReferencePoint = referencePoint?.ToArray() ?? new double[tasks.Count];
        if (ReferencePoint.Count != tasks.Count)
        {
            throw new ArgumentException($"The reference point needs {tasks.Count} entries.", nameof(referencePoint));
        }

        NonDominated = ParetoFront.NonDominated(Points.Select(p => p.Accuracies).ToList());
        Hypervolume = ParetoFront.Hypervolume(Points.Select(p => p.Accuracies).ToList(), ReferencePoint);
    }

    /// <summary>The method name.</summary>
    public string Method { get; }

    /// <summary>The task names.</summary>
    public IReadOnlyList<string> Tasks { get; }

    /// <summary>The evaluated points, in grid order.</summary>
    public IReadOnlyList<ParetoPoint> Points { get; }

    /// <summary>The hypervolume reference point (accuracies).</summary>
    public IReadOnlyList<double> ReferencePoint { get; }

    /// <summary>The indices of the points whose accuracies no other point dominates.</summary>
    public IReadOnlyList<int> NonDominated { get; }

    /// <summary>The hypervolume of the accuracies against <see cref="ReferencePoint"/>.</summary>
    public double Hypervolume { get; }

    /// <summary>The report as indented JSON.</summary>
    /// <returns>The JSON text.</returns>
    public string ToJson() => JsonSerializer.Serialize(
        new Dto(Method, Tasks, Points.Select(p => new PointDto(p.Preference, p.Accuracies, p.Losses)).ToList(), ReferencePoint, NonDominated, Hypervolume),
        JsonOptions);

    /// <summary>Reads a report written by <see cref="ToJson"/>.</summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The report (non-dominated subset and hypervolume recomputed).</returns>
    /// <exception cref="JsonException">The text is not a report.</exception>
    public static ParetoEvaluationReport FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        var dto = JsonSerializer.Deserialize<Dto>(json, JsonOptions) ?? throw new JsonException("The JSON holds no Pareto evaluation report.");
        if (dto.Method is null || dto.Tasks is null || dto.Points is null)
        {
            throw new JsonException("A Pareto evaluation report needs 'method', 'tasks' and 'points'.");
        }

        return new ParetoEvaluationReport(dto.Method, dto.Tasks, dto.Points.Select(p => new ParetoPoint(p.Preference, p.Accuracies, p.Losses)).ToList(), dto.ReferencePoint);
    }

    /// <summary>
    /// The report as CSV, one row per point: <c>method,p_{task}…,acc_{task}…,loss_{task}…,non_dominated</c>, invariant culture.
    /// </summary>
    /// <returns>The CSV text.</returns>
    public string ToCsv()
    {
        var builder = new StringBuilder();
        builder.Append("method");
        foreach (var prefix in new[] { "p_", "acc_", "loss_" })
        {
            foreach (var task in Tasks)
            {
                builder.Append(',').Append(Quote(prefix + task));
            }
        }

        builder.Append(",non_dominated\n");
        var front = NonDominated.ToHashSet();
        for (int i = 0; i < Points.Count; i++)
        {
            var point = Points[i];
            builder.Append(Quote(Method));
            foreach (var value in point.Preference.Concat(point.Accuracies).Concat(point.Losses))
            {
                builder.Append(',').Append(value.ToString("R", CultureInfo.InvariantCulture));
            }

            builder.Append(',').Append(front.Contains(i) ? "true" : "false").Append('\n');
        }

        return builder.ToString();
    }

    /// <summary>Writes <see cref="ToJson"/> atomically (temporary file in the same folder, then rename).</summary>
    /// <param name="path">The file path.</param>
    public void SaveJson(string path) => Save(path, ToJson());

    /// <summary>Writes <see cref="ToCsv"/> atomically (temporary file in the same folder, then rename).</summary>
    /// <param name="path">The file path.</param>
    public void SaveCsv(string path) => Save(path, ToCsv());

    private static void Save(string path, string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var bytes = new UTF8Encoding(false).GetBytes(text);
        SafeTensorsWriter.WriteAtomically(Path.GetFullPath(path), stream => stream.Write(bytes));
    }

    private static string Quote(string value) =>
        value.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + value.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : value;

    private sealed record PointDto(
        [property: JsonPropertyName("preference")] IReadOnlyList<double> Preference,
        [property: JsonPropertyName("accuracies")] IReadOnlyList<double> Accuracies,
        [property: JsonPropertyName("losses")] IReadOnlyList<double> Losses);

    private sealed record Dto(
        [property: JsonPropertyName("method")] string Method,
        [property: JsonPropertyName("tasks")] IReadOnlyList<string> Tasks,
        [property: JsonPropertyName("points")] IReadOnlyList<PointDto> Points,
        [property: JsonPropertyName("reference_point")] IReadOnlyList<double>? ReferencePoint,
        [property: JsonPropertyName("non_dominated")] IReadOnlyList<int>? NonDominated,
        [property: JsonPropertyName("hypervolume")] double Hypervolume);
}
