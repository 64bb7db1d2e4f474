namespace WeightEnsembling.Upscaling;

/// <summary>Which modules of each selected encoder layer become weight-ensembling mixtures of experts.</summary>
[Flags]
public enum UpscaleTargets
{
    /// <summary>The MLP (<c>mlp.fc1</c>, <c>mlp.fc2</c>), as in the WEMoE paper.</summary>
    Mlp = 1,

    /// <summary>The attention projections (<c>self_attn.{q,k,v,out}_proj</c>).</summary>
    Attention = 2,

    /// <summary>Both the MLP and the attention projections.</summary>
    MlpAndAttention = Mlp | Attention,
}
