using WeightEnsembling.Pareto;

namespace WeightEnsembling.Training;

/// <summary>What one objective step computed.</summary>
/// <param name="Losses">Each task's loss, by task name.</param>
/// <param name="Loss">The minimised (scalarized) loss.</param>
/// <param name="Preference">The preference the step was trained at, or <see langword="null"/>.</param>
/// <param name="EpoMove">EPO's linear program of the step, or <see langword="null"/>.</param>
internal sealed record ObjectiveStep(IReadOnlyDictionary<string, double> Losses, double Loss, IReadOnlyList<double>? Preference, EpoMove? EpoMove);
