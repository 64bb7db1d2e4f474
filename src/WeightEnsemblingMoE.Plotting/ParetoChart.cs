namespace WeightEnsembling.Plotting;

/// <summary>The data of a Pareto-front figure: the tasks, the metric, and the series to draw (fronts, then single models).</summary>
/// <param name="Tasks">The task names (two or more), in the order of every point's metrics.</param>
/// <param name="MetricName">What the metrics are (e.g. <c>accuracy</c> or <c>loss</c>), for the axis labels.</param>
/// <param name="Series">The series, drawn in order.</param>
public sealed record ParetoChart(IReadOnlyList<string> Tasks, string MetricName, IReadOnlyList<ParetoSeries> Series)
{
    /// <summary>Checks that every point has one metric per task and no NaN.</summary>
    /// <exception cref="ArgumentException">The chart has fewer than two tasks, no series, or a bad point; the message names it.</exception>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Tasks);
        ArgumentNullException.ThrowIfNull(Series);
        ArgumentException.ThrowIfNullOrWhiteSpace(MetricName);
        if (Tasks.Count < 2)
        {
            throw new ArgumentException($"A Pareto chart needs at least two tasks, got {Tasks.Count}.", nameof(Tasks));
        }
        if (Series.Count == 0)
        {
            throw new ArgumentException("A Pareto chart needs at least one series.", nameof(Series));
        }
        foreach (var series in Series)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(series?.Label, nameof(Series));
            for (int p = 0; p < series.Points.Count; p++)
            {
                var metrics = series.Points[p].Metrics;
                if (metrics is null || metrics.Count != Tasks.Count)
                {
                    throw new ArgumentException($"Point {p} of series '{series.Label}' has {metrics?.Count ?? 0} metrics; the chart has {Tasks.Count} tasks.", nameof(Series));
                }
                if (metrics.Any(m => !double.IsFinite(m)))
                {
                    throw new ArgumentException($"Point {p} of series '{series.Label}' has a NaN or infinite metric.", nameof(Series));
                }
            }
        }
    }
}
