namespace WeightEnsembling.World;

/// <summary>One premise of issue 17, measured: what was measured, its value, the threshold fixed before any merging method ran, and whether it holds.</summary>
/// <param name="Premise">P1a, P1b, P2a, P2b, P3 or P4.</param>
/// <param name="Measure">What the value is.</param>
/// <param name="Value">The measured value (percent or points, or a count of layers for P3).</param>
/// <param name="Threshold">The threshold as text, e.g. "≤ 60".</param>
/// <param name="Holds">Whether the value meets the threshold.</param>
public sealed record PremiseCheck(string Premise, string Measure, double Value, string Threshold, bool Holds);
