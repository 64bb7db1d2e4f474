namespace WeightEnsembling.Pareto;

/// <summary>Which linear program of EPO search produced the loss weights of a step.</summary>
public enum EpoMove
{
    /// <summary>The balance LP: the losses are off the preference ray (non-uniformity μ above ε); move toward it.</summary>
    Balance,

    /// <summary>The restricted descent LP: on the ray, descend every loss without leaving it.</summary>
    Descent,

    /// <summary>The relaxed descent LP (simplex and Cα ≥ 0 only): the fallback when the first LP was infeasible; logged.</summary>
    RelaxedDescent,

    /// <summary>Every LP failed: the weights are the normalised preference, as FusionBench does; logged as a warning.</summary>
    PreferenceFallback,
}
