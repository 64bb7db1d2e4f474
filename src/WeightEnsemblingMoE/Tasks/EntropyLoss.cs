using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// The entropy of the predicted class distribution, the unsupervised objective of test-time adaptation in AdaMerging
/// and WEMoE (FusionBench's <c>entropy_loss</c>).
/// </summary>
public static class EntropyLoss
{
    /// <summary>The default <c>eps</c> inside the logarithm, as in FusionBench.</summary>
    public const double DefaultEpsilon = 1e-8;

    /// <summary>
    /// Computes mean over the batch of −Σ_c p_c log(p_c + <paramref name="epsilon"/>), with p = softmax(logits) over the
    /// classes. Differentiable with respect to <paramref name="logits"/>.
    /// </summary>
    /// <param name="logits">The logits, shape [B, C] with B ≥ 1, floating point.</param>
    /// <param name="epsilon">The small constant inside the logarithm, non-negative. The default value is 1e-8.</param>
    /// <returns>A scalar tensor.</returns>
    /// <exception cref="ArgumentException"><paramref name="logits"/> is not a non-empty floating-point matrix.</exception>
    public static Tensor Compute(Tensor logits, double epsilon = DefaultEpsilon)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentOutOfRangeException.ThrowIfNegative(epsilon);
        if (logits.dim() != 2 || logits.shape[0] == 0 || logits.shape[1] == 0)
        {
            throw new ArgumentException($"logits must have shape [B, C] with B, C ≥ 1, got [{string.Join(", ", logits.shape)}].", nameof(logits));
        }
        if (!logits.is_floating_point())
        {
            throw new ArgumentException($"logits must be floating point, got {logits.dtype}.", nameof(logits));
        }
        using var scope = NewDisposeScope();
        var probabilities = logits.softmax(-1);
        var entropy = -(probabilities * (probabilities + epsilon).log()).sum(-1);
        return entropy.mean().MoveToOuterDisposeScope();
    }
}
