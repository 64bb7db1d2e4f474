namespace WeightEnsembling.Pareto;

/// <summary>How <see cref="Training.ParetoObjective"/> turns the per-task losses of a step into one training loss.</summary>
public enum ParetoScalarization
{
    /// <summary>Linear scalarization: loss = Σ_t p_t · CE_t.</summary>
    LinearScalarization,

    /// <summary>Exact Pareto optimal search: loss = T · Σ_t α_t · CE_t with α from <see cref="EpoSolver"/>.</summary>
    ExactParetoOptimal,
}
