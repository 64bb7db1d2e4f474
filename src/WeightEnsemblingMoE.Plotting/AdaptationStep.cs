namespace WeightEnsembling.Plotting;

/// <summary>One evaluation during test-time adaptation: the step, the accuracy per task and the entropy loss.</summary>
/// <param name="Step">The number of adaptation steps taken.</param>
/// <param name="TaskAccuracies">The accuracy per task as a fraction in [0, 1], in the curves' task order.</param>
/// <param name="EntropyLoss">The entropy loss (summed or averaged over tasks, as the trainer reports it) at this step.</param>
public sealed record AdaptationStep(int Step, IReadOnlyList<double> TaskAccuracies, double EntropyLoss)
{
    /// <summary>The mean accuracy over tasks.</summary>
    public double AverageAccuracy => TaskAccuracies.Average();
}
