using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// Quantiles through <c>kthvalue</c>, which, unlike <c>torch.quantile</c>, has no 16M-element limit. Reproduces
/// <c>torch.quantile</c>'s default 'linear' interpolation, including its rank arithmetic in the input's dtype.
/// </summary>
internal static class TensorQuantile
{
    /// <summary>The <paramref name="q"/>-quantile of all elements of <paramref name="values"/>, as a 0-d tensor.</summary>
    public static Tensor Quantile(Tensor values, double q)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentOutOfRangeException.ThrowIfLessThan(q, 0.0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(q, 1.0);
        long n = values.numel();
        if (n == 0)
        {
            throw new ArgumentException("Cannot take a quantile of an empty tensor.", nameof(values));
        }

        using var scope = NewDisposeScope();
        var flat = values.reshape(-1);

        // torch.quantile computes rank = q·(n − 1) in the input's dtype; do the same so ties in rounding agree.
        double rank = values.dtype == ScalarType.Float32 ? (float)q * (float)(n - 1) : q * (n - 1);
        long below = (long)Math.Floor(rank);
        long above = Math.Min((long)Math.Ceiling(rank), n - 1);
        double weight = values.dtype == ScalarType.Float32 ? (float)rank - (float)below : rank - below;

        var low = flat.kthvalue(below + 1, 0).values;
        if (above == below)
        {
            return low.MoveToOuterDisposeScope();
        }

        var high = flat.kthvalue(above + 1, 0).values;
        // A double weight would promote the 0-d float32 operands to float64 (TorchSharp wraps it as a 0-d tensor): pass it in their dtype.
        return low.lerp(high, tensor(weight, low.dtype, low.device)).MoveToOuterDisposeScope();
    }
}
