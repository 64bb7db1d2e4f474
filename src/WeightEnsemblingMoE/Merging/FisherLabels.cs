namespace WeightEnsembling.Merging;

/// <summary>Which label y the log-likelihood log p(y | x) of the diagonal Fisher estimate uses.</summary>
public enum FisherLabels
{
    /// <summary>
    /// y is drawn from the model's own prediction p(· | x): a Monte-Carlo estimate of the true Fisher information
    /// E_x E_{y~p(·|x)}[(∂ log p(y|x)/∂θ)²], as in Matena &amp; Raffel (2022).
    /// </summary>
    Sampled,

    /// <summary>y is the example's true label: the "empirical Fisher". Needs a labelled dataset.</summary>
    True,
}
