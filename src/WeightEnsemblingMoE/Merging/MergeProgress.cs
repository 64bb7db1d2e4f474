namespace WeightEnsembling.Merging;

/// <summary>Progress of a data-aware merge (<see cref="FisherMerging"/>, <see cref="RegMean"/>), reported after each batch.</summary>
/// <param name="Method">The merging method, e.g. <c>fisher</c> or <c>regmean</c>.</param>
/// <param name="Task">The name of the task whose statistics are being collected.</param>
/// <param name="TaskIndex">The 0-based index of that task.</param>
/// <param name="TaskCount">The number of tasks.</param>
/// <param name="Examples">The examples of this task processed so far.</param>
/// <param name="TotalExamples">The examples of this task that will be processed.</param>
public sealed record MergeProgress(string Method, string Task, int TaskIndex, int TaskCount, long Examples, long TotalExamples);
