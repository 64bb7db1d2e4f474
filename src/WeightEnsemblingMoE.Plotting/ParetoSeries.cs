namespace WeightEnsembling.Plotting;

/// <summary>A named set of models on a Pareto chart: a method's front (e.g. PWEMoE's grid of preferences) or single models.</summary>
/// <param name="Label">The legend label.</param>
/// <param name="Points">The models.</param>
/// <param name="Connect">Whether to join the points with a line (in order of the first task's metric) on two-task panels. The default value is <see langword="true"/>.</param>
public sealed record ParetoSeries(string Label, IReadOnlyList<ParetoPoint> Points, bool Connect = true)
{
    /// <summary>A series from (preference, per-task metric) pairs, as a preference-conditioned method reports them.</summary>
    /// <param name="label">The legend label.</param>
    /// <param name="points">The (preference, metrics) pairs.</param>
    /// <param name="connect">Whether to join the points with a line.</param>
    /// <returns>The series.</returns>
    public static ParetoSeries From(string label, IEnumerable<(double[] Preference, double[] Metrics)> points, bool connect = true)
    {
        ArgumentNullException.ThrowIfNull(points);
        return new ParetoSeries(label, points.Select(p => new ParetoPoint(p.Metrics, p.Preference)).ToList(), connect);
    }
}
