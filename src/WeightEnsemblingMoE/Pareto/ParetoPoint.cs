namespace WeightEnsembling.Pareto;

/// <summary>One evaluated point of a Pareto set: a preference (or scaling vector) and the scores it gives each task.</summary>
/// <param name="Preference">The preference over the tasks (for the individual experts, the corner e_t).</param>
/// <param name="Accuracies">The accuracy on each task, in task order.</param>
/// <param name="Losses">The mean cross-entropy on each task, in task order.</param>
public sealed record ParetoPoint(IReadOnlyList<double> Preference, IReadOnlyList<double> Accuracies, IReadOnlyList<double> Losses);
