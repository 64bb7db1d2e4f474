namespace WeightEnsembling.Models;

/// <summary>SHA-256 fingerprints of a <see cref="ModelPool"/>'s weights, as lowercase hexadecimal digests.</summary>
/// <param name="Pretrained">The fingerprint of θ_0 (every state-dict tensor as float32).</param>
/// <param name="TaskVectors">The fingerprint of each task vector τ_t = θ_t − θ_0, in task order.</param>
public sealed record ModelPoolFingerprint(string Pretrained, IReadOnlyList<string> TaskVectors)
{
    /// <summary>
    /// What differs between the pool a model was saved from and a target pool, one sentence each: θ_0, experts missing,
    /// extra or reordered (by name), and experts of the same name with other weights.
    /// </summary>
    internal static IEnumerable<string> Differences(
        IReadOnlyList<string> savedNames, ModelPoolFingerprint saved, IReadOnlyList<string> targetNames, ModelPoolFingerprint target)
    {
        if (!string.Equals(saved.Pretrained, target.Pretrained, StringComparison.Ordinal))
        {
            yield return $"the pre-trained model θ_0 differs (fingerprint saved {Short(saved.Pretrained)}, target {Short(target.Pretrained)})";
        }

        var missing = savedNames.Where(n => !targetNames.Contains(n, StringComparer.Ordinal)).ToList();
        var extra = targetNames.Where(n => !savedNames.Contains(n, StringComparer.Ordinal)).ToList();
        foreach (var name in missing)
        {
            yield return $"expert '{name}' is missing from the target";
        }

        foreach (var name in extra)
        {
            yield return $"the target has expert '{name}', which the saved model does not";
        }

        if (missing.Count == 0 && extra.Count == 0 && !savedNames.SequenceEqual(targetNames, StringComparer.Ordinal))
        {
            yield return $"the experts are reordered: saved [{string.Join(", ", savedNames)}], target [{string.Join(", ", targetNames)}]";
            yield break;
        }

        for (int t = 0; t < Math.Min(savedNames.Count, targetNames.Count); t++)
        {
            if (string.Equals(savedNames[t], targetNames[t], StringComparison.Ordinal)
                && !string.Equals(saved.TaskVectors[t], target.TaskVectors[t], StringComparison.Ordinal))
            {
                yield return $"expert '{savedNames[t]}' has other weights (task-vector fingerprint saved {Short(saved.TaskVectors[t])}, target {Short(target.TaskVectors[t])})";
            }
        }
    }

    private static string Short(string fingerprint) => fingerprint.Length > 12 ? fingerprint[..12] + "…" : fingerprint;
}
