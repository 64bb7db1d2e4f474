namespace WeightEnsembling.Models;

/// <summary>SHA-256 fingerprints of a <see cref="ModelPool"/>'s weights, as lowercase hexadecimal digests.</summary>
/// <param name="Pretrained">The fingerprint of θ_0 (every state-dict tensor as float32).</param>
/// <param name="TaskVectors">The fingerprint of each task vector τ_t = θ_t − θ_0, in task order.</param>
public sealed record ModelPoolFingerprint(string Pretrained, IReadOnlyList<string> TaskVectors);
