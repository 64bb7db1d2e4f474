namespace WeightEnsembling.Experiments;

/// <summary>The methods <see cref="MergingBenchmark"/> can run, in the papers' table order.</summary>
public enum MergingMethod
{
    /// <summary>The pre-trained model with each task's head.</summary>
    Pretrained,

    /// <summary>Each fine-tuned model on its own task (the upper reference).</summary>
    Individual,

    /// <summary>Simple averaging of the fine-tuned models.</summary>
    SimpleAverage,

    /// <summary>Task arithmetic, λ chosen on the validation split.</summary>
    TaskArithmetic,

    /// <summary>TIES-merging, λ chosen on the validation split.</summary>
    Ties,

    /// <summary>Fisher merging (diagonal Fisher from validation examples).</summary>
    Fisher,

    /// <summary>RegMean (Gram matrices from validation examples).</summary>
    RegMean,

    /// <summary>Task-wise AdaMerging (test-time adaptation of one λ per task).</summary>
    AdaMergingTaskWise,

    /// <summary>Layer-wise AdaMerging (one λ per task per parameter tensor).</summary>
    AdaMergingLayerWise,

    /// <summary>WEMoE with 0-layer routers.</summary>
    WemoeZeroLayer,

    /// <summary>WEMoE with 1-layer routers.</summary>
    WemoeOneLayer,

    /// <summary>WEMoE with 2-layer routers (the paper's default).</summary>
    Wemoe,

    /// <summary>E-WEMoE: one shared router with layer-position encoding, sparse task vectors (p = 0.9).</summary>
    EWemoe,

    /// <summary>WEMoE with low-rank (SVD) task vectors.</summary>
    LowRankWemoe,

    /// <summary>PWEMoE trained by linear scalarization on the validation split, evaluated at the uniform preference.</summary>
    PwemoeUniform,
}
