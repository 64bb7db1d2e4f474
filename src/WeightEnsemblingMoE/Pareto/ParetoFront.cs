namespace WeightEnsembling.Pareto;

/// <summary>Pareto dominance and hypervolume for objectives that are maximised (accuracies; negate losses first).</summary>
public static class ParetoFront
{
    /// <summary>Whether <paramref name="a"/> dominates <paramref name="b"/>: at least as good everywhere, better somewhere.</summary>
    /// <param name="a">The first point.</param>
    /// <param name="b">The second point, of the same length.</param>
    /// <returns><see langword="true"/> when a dominates b.</returns>
    public static bool Dominates(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Count != b.Count)
        {
            throw new ArgumentException($"Points of {a.Count} and {b.Count} objectives cannot be compared.", nameof(b));
        }

        bool better = false;
        for (int i = 0; i < a.Count; i++)
        {
            if (a[i] < b[i])
            {
                return false;
            }

            better |= a[i] > b[i];
        }

        return better;
    }

    /// <summary>The indices of the points no other point dominates (equal points are all kept), in input order.</summary>
    /// <param name="points">The points, all of one length.</param>
    /// <returns>The indices of the non-dominated subset.</returns>
    public static IReadOnlyList<int> NonDominated(IReadOnlyList<IReadOnlyList<double>> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        return Enumerable.Range(0, points.Count).Where(i => !points.Any(other => Dominates(other, points[i]))).ToList();
    }

    /// <summary>
    /// The hypervolume (Lebesgue measure) of the region dominated by <paramref name="points"/> and bounded below by
    /// <paramref name="reference"/>; coordinates below the reference contribute nothing. Exact (dimension slicing).
    /// </summary>
    /// <param name="points">The points, each as long as the reference, finite.</param>
    /// <param name="reference">The reference point, finite (e.g. all zeros for accuracies).</param>
    /// <returns>The hypervolume, ≥ 0.</returns>
    /// <exception cref="ArgumentException">A point has the wrong length or a non-finite coordinate.</exception>
    public static double Hypervolume(IReadOnlyList<IReadOnlyList<double>> points, IReadOnlyList<double> reference)
    {
        ArgumentNullException.ThrowIfNull(points);
        ArgumentNullException.ThrowIfNull(reference);
        int d = reference.Count;
        ArgumentOutOfRangeException.ThrowIfZero(d, nameof(reference));
        if (reference.Any(v => !double.IsFinite(v)))
        {
            throw new ArgumentException("The reference point must be finite.", nameof(reference));
        }

        var clipped = new List<double[]>(points.Count);
        for (int i = 0; i < points.Count; i++)
        {
            var point = points[i] ?? throw new ArgumentException($"Point {i} is null.", nameof(points));
            if (point.Count != d || point.Any(v => !double.IsFinite(v)))
            {
                throw new ArgumentException($"Point {i} must have {d} finite coordinates.", nameof(points));
            }

            clipped.Add(point.Select((v, k) => Math.Max(v, reference[k])).ToArray());
        }

        return Slice(clipped, reference, d);
    }

    // Slices along the last of the first d coordinates: between consecutive levels, the points above the level span a
    // (d − 1)-dimensional hypervolume.
    private static double Slice(List<double[]> points, IReadOnlyList<double> reference, int d)
    {
        if (points.Count == 0)
        {
            return 0;
        }

        if (d == 1)
        {
            return points.Max(p => p[0]) - reference[0];
        }

        var sorted = points.OrderByDescending(p => p[d - 1]).ToList();
        double volume = 0;
        for (int i = 0; i < sorted.Count; i++)
        {
            double lower = i + 1 < sorted.Count ? sorted[i + 1][d - 1] : reference[d - 1];
            double height = sorted[i][d - 1] - lower;
            if (height > 0)
            {
                volume += height * Slice(sorted.GetRange(0, i + 1), reference, d - 1);
            }
        }

        return volume;
    }
}
