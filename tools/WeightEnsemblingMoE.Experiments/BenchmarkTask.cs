using WeightEnsembling.Tasks;

namespace WeightEnsembling.Experiments;

/// <summary>One task of a merging benchmark: its head and its labeled validation and test splits.</summary>
/// <param name="Name">The task name (a table column).</param>
/// <param name="Validation">Labeled data for choosing λ and for data-aware baselines (Fisher, RegMean, PWEMoE training).</param>
/// <param name="Test">Labeled test data; test-time adaptation reads its images without labels, as in the papers.</param>
/// <param name="Head">The task's frozen head.</param>
public sealed record BenchmarkTask(string Name, TaskDataset Validation, TaskDataset Test, TaskHead Head);
