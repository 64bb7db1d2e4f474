namespace WeightEnsembling.World;

/// <summary>One task's figures on its test split: zero-shot and expert accuracy (percent), the expert's first and last fine-tuning loss.</summary>
public sealed record WorldTaskResult(string Task, int Classes, double ZeroShot, double Expert, float FirstLoss, float LastLoss);
