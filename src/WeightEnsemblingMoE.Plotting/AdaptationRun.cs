namespace WeightEnsembling.Plotting;

/// <summary>The evaluations of one test-time adaptation run, at one learning rate.</summary>
/// <param name="LearningRate">The learning rate, for the legend.</param>
/// <param name="Steps">The evaluations, in step order.</param>
public sealed record AdaptationRun(double LearningRate, IReadOnlyList<AdaptationStep> Steps);
