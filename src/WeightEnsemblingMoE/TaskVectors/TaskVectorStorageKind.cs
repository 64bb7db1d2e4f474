namespace WeightEnsembling.TaskVectors;

/// <summary>How task vectors are stored.</summary>
public enum TaskVectorStorageKind
{
    /// <summary>Stacked dense tensors of shape [T, ...].</summary>
    Dense,

    /// <summary>Magnitude-pruned, stored compactly as values and indices (E-WEMoE).</summary>
    Sparse,

    /// <summary>Truncated SVD factors of each 2-D tensor; 1-D tensors stay dense.</summary>
    LowRank,
}
