namespace WeightEnsembling.Merging;

/// <summary>Options of <see cref="StateDictMerging.Ties"/>.</summary>
public sealed class TiesMergingOptions
{
    /// <summary>
    /// The fraction of each task vector kept by magnitude, in (0, 1], taken over the flattened concatenation of all
    /// floating-point tensors of that task vector. The default value is 0.2.
    /// </summary>
    public double TopK { get; set; } = 0.2;

    /// <summary>The scaling factor λ of the merged task vector. The default value is 0.3.</summary>
    public double ScalingFactor { get; set; } = 0.3;

    /// <summary>How agreeing entries are combined. The default value is <see cref="TiesDisjointMerge.Sum"/>.</summary>
    public TiesDisjointMerge DisjointMerge { get; set; } = TiesDisjointMerge.Sum;

    /// <summary>Checks the options and throws an exception naming the first bad option.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (!(TopK > 0 && TopK <= 1))
        {
            throw new ArgumentException($"{nameof(TopK)} must lie in (0, 1]; got {TopK}.", nameof(TopK));
        }

        if (!double.IsFinite(ScalingFactor))
        {
            throw new ArgumentException($"{nameof(ScalingFactor)} must be finite; got {ScalingFactor}.", nameof(ScalingFactor));
        }

        if (!Enum.IsDefined(DisjointMerge))
        {
            throw new ArgumentException($"{nameof(DisjointMerge)} = {DisjointMerge} is not defined.", nameof(DisjointMerge));
        }
    }
}
