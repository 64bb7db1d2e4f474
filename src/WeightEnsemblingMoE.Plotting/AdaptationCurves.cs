namespace WeightEnsembling.Plotting;

/// <summary>The data of an adaptation-curves figure: accuracy and entropy loss against steps for several learning rates.</summary>
/// <param name="Tasks">The task names, in the order of every step's accuracies.</param>
/// <param name="Runs">One run per learning rate.</param>
public sealed record AdaptationCurves(IReadOnlyList<string> Tasks, IReadOnlyList<AdaptationRun> Runs)
{
    /// <summary>Checks the runs against the tasks.</summary>
    /// <exception cref="ArgumentException">No task or run, an empty run, steps out of order, or a bad value; the message names it.</exception>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Tasks);
        ArgumentNullException.ThrowIfNull(Runs);
        if (Tasks.Count == 0 || Runs.Count == 0)
        {
            throw new ArgumentException($"Adaptation curves need at least one task and one run, got {Tasks.Count} and {Runs.Count}.", nameof(Runs));
        }
        foreach (var run in Runs)
        {
            if (run?.Steps is null || run.Steps.Count == 0)
            {
                throw new ArgumentException($"The run at learning rate {run?.LearningRate} has no steps.", nameof(Runs));
            }
            for (int s = 0; s < run.Steps.Count; s++)
            {
                var step = run.Steps[s];
                if (s > 0 && step.Step <= run.Steps[s - 1].Step)
                {
                    throw new ArgumentException($"The run at learning rate {run.LearningRate} lists step {step.Step} after step {run.Steps[s - 1].Step}.", nameof(Runs));
                }
                if (step.TaskAccuracies.Count != Tasks.Count || step.TaskAccuracies.Any(a => !(a >= 0 && a <= 1)) || !double.IsFinite(step.EntropyLoss))
                {
                    throw new ArgumentException($"Step {step.Step} of the run at learning rate {run.LearningRate} needs {Tasks.Count} accuracies in [0, 1] and a finite entropy loss.", nameof(Runs));
                }
            }
        }
    }
}
