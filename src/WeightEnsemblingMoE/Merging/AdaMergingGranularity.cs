using WeightEnsembling.Training;
namespace WeightEnsembling.Merging;

/// <summary>How many merging coefficients AdaMerging learns.</summary>
public enum AdaMergingGranularity
{
    /// <summary>One coefficient per task, shared by every parameter tensor.</summary>
    TaskWise,

    /// <summary>One coefficient per task per parameter tensor.</summary>
    LayerWise,
}
