namespace WeightEnsembling.Moe;

/// <summary>How a <see cref="WeightEnsemblingMoE"/> applies the routing weights of a batch.</summary>
public enum RoutingMode
{
    /// <summary>Every sample runs with its own merged weights θ_0 + Σ_t r_{b,t} τ_t (the WEMoE default).</summary>
    PerSample,

    /// <summary>The routing weights are averaged over the batch and the whole batch runs with one merged model.</summary>
    BatchReduce,
}
