using WeightEnsembling.Evaluation;

namespace WeightEnsembling.Analysis;

/// <summary>One grid point of a loss landscape: the model θ_0 + λ_1 τ_1 + λ_2 τ_2 evaluated on every task.</summary>
/// <param name="Lambda1">The coefficient of τ_1.</param>
/// <param name="Lambda2">The coefficient of τ_2.</param>
/// <param name="Scores">The model's accuracy and mean cross-entropy per task, in the landscape's task order.</param>
public sealed record LossLandscapePoint(double Lambda1, double Lambda2, IReadOnlyList<TaskScore> Scores)
{
    /// <summary>The joint loss: the sum of the tasks' mean cross-entropies.</summary>
    public double JointLoss => Scores.Sum(s => s.Loss ?? double.NaN);
}
