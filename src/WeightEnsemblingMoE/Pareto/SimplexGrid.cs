namespace WeightEnsembling.Pareto;

/// <summary>Uniform grids on the probability simplex, as FusionBench's <c>generate_simplex_grid(n, m)</c>.</summary>
public static class SimplexGrid
{
    /// <summary>
    /// Every point of the n-dimensional simplex whose coordinates are multiples of 1/(m − 1), in FusionBench's order
    /// (cut points 0 ≤ i_1 ≤ … ≤ i_{n−1} ≤ m − 1 in lexicographic order; coordinate k is (i_{k+1} − i_k)/(m − 1)). For
    /// example <c>Generate(2, 3)</c> is (0, 1), (0.5, 0.5), (1, 0) and <c>Generate(3, 2)</c> is (0, 0, 1), (0, 1, 0), (1, 0, 0).
    /// </summary>
    /// <param name="n">The number of coordinates (tasks), at least 1.</param>
    /// <param name="m">The number of grid values per coordinate, at least 2.</param>
    /// <returns>C(n + m − 2, n − 1) points, each summing to 1.</returns>
    public static IReadOnlyList<double[]> Generate(int n, int m)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(m, 2);
        int divisions = m - 1;
        var points = new List<double[]>();
        var cuts = new int[n - 1];
        while (true)
        {
            var point = new double[n];
            int previous = 0;
            for (int k = 0; k < n; k++)
            {
                int next = k < n - 1 ? cuts[k] : divisions;
                point[k] = (double)(next - previous) / divisions;
                previous = next;
            }

            points.Add(point);

            // Next non-decreasing tuple of cuts (combinations with replacement, lexicographic).
            int position = n - 2;
            while (position >= 0 && cuts[position] == divisions)
            {
                position--;
            }

            if (position < 0)
            {
                return points;
            }

            int value = cuts[position] + 1;
            for (int k = position; k < n - 1; k++)
            {
                cuts[k] = value;
            }
        }
    }
}
