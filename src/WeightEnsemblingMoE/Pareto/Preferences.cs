namespace WeightEnsembling.Pareto;

/// <summary>Checks preference vectors: length T, finite, non-negative, summing to 1.</summary>
internal static class Preferences
{
    /// <summary>The tolerance on Σ p_t = 1 (float32 grids and rounded inputs pass).</summary>
    public const double SumTolerance = 1e-4;

    /// <summary>Returns a copy of a valid preference or throws an exception that says what is wrong.</summary>
    public static double[] Check(IReadOnlyList<double> preference, int taskCount, string parameterName)
    {
        ArgumentNullException.ThrowIfNull(preference, parameterName);
        if (preference.Count != taskCount)
        {
            throw new ArgumentException($"The preference has {preference.Count} entries; the model has {taskCount} tasks.", parameterName);
        }

        var copy = preference.ToArray();
        for (int t = 0; t < copy.Length; t++)
        {
            if (!double.IsFinite(copy[t]) || copy[t] < 0)
            {
                throw new ArgumentException($"Preference entry {t} is {copy[t]}; every entry must be finite and non-negative.", parameterName);
            }
        }

        double sum = copy.Sum();
        if (Math.Abs(sum - 1) > SumTolerance)
        {
            throw new ArgumentException($"The preference sums to {sum}, not 1 (tolerance {SumTolerance}).", parameterName);
        }

        return copy;
    }
}
