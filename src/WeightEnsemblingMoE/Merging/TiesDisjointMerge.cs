namespace WeightEnsembling.Merging;

/// <summary>How TIES merging combines, per element, the trimmed task vectors that agree with the elected sign.</summary>
public enum TiesDisjointMerge
{
    /// <summary>Their sum.</summary>
    Sum,

    /// <summary>Their mean (the sum divided by the number of agreeing non-zero entries, at least 1).</summary>
    Mean,
}
