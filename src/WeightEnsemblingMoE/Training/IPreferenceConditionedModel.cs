namespace WeightEnsembling.Training;

/// <summary>
/// A model whose output depends on a preference over its tasks (PWEMoE): <see cref="AdaptationTrainer"/> sets a preference
/// drawn for each step before the forward passes of a Pareto objective.
/// </summary>
public interface IPreferenceConditionedModel : IAdaptableModel
{
    /// <summary>The number of tasks T (the length of a preference).</summary>
    int TaskCount { get; }

    /// <summary>Sets the preference the next forward passes use.</summary>
    /// <param name="preference">T finite, non-negative entries summing to 1.</param>
    void SetPreference(IReadOnlyList<double> preference);
}
