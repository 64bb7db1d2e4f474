namespace WeightEnsembling.Pareto;

/// <summary>The loss weights α of one EPO step.</summary>
/// <param name="Alpha">The weights α on the simplex, one per task; the training loss is T · Σ_t α_t · L_t.</param>
/// <param name="Move">The linear program that produced them.</param>
/// <param name="NonUniformity">The non-uniformity μ of the preference-weighted losses (0 on the preference ray).</param>
public sealed record EpoSolution(IReadOnlyList<double> Alpha, EpoMove Move, double NonUniformity);
