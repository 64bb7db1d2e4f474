namespace WeightEnsembling.Plotting;

/// <summary>One model on a Pareto chart: its per-task metric and, for a preference-conditioned model, its preference.</summary>
/// <param name="Metrics">The metric per task (accuracy or loss), in the chart's task order.</param>
/// <param name="Preference">The preference vector the model was built for, or <see langword="null"/> (e.g. a single fine-tuned model).</param>
public sealed record ParetoPoint(IReadOnlyList<double> Metrics, IReadOnlyList<double>? Preference = null);
