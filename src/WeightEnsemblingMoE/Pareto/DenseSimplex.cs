namespace WeightEnsembling.Pareto;

/// <summary>The outcome of <see cref="DenseSimplex.Maximize"/>.</summary>
internal enum LinearProgramStatus
{
    /// <summary>An optimal vertex was found.</summary>
    Optimal,

    /// <summary>No point satisfies the constraints.</summary>
    Infeasible,

    /// <summary>The objective grows without bound.</summary>
    Unbounded,
}

/// <summary>
/// A small dense two-phase simplex method with Bland's rule (no cycling) for the tiny linear programs of EPO search
/// (T ≤ 16 variables): maximise cᵀx subject to A_eq x = b_eq, A_ge x ≥ b_ge and x ≥ 0.
/// </summary>
internal static class DenseSimplex
{
    private const double Tolerance = 1e-9;

    /// <summary>Solves the linear program; <paramref name="solution"/> is set when the status is optimal.</summary>
    public static LinearProgramStatus Maximize(double[] c, double[,] aEq, double[] bEq, double[,] aGe, double[] bGe, out double[] solution)
    {
        int n = c.Length;
        int mEq = bEq.Length;
        int mGe = bGe.Length;
        int m = mEq + mGe;
        // Columns: x (n), surplus of each ≥ row (mGe), artificial of each row (m); last column: right-hand side.
        int columns = n + mGe + m;
        var tableau = new double[m + 1, columns + 1];
        var basis = new int[m];
        for (int i = 0; i < m; i++)
        {
            bool isEq = i < mEq;
            double rhs = isEq ? bEq[i] : bGe[i - mEq];
            double sign = rhs < 0 ? -1 : 1;
            for (int j = 0; j < n; j++)
            {
                tableau[i, j] = sign * (isEq ? aEq[i, j] : aGe[i - mEq, j]);
            }

            if (!isEq)
            {
                tableau[i, n + (i - mEq)] = -sign;
            }

            tableau[i, n + mGe + i] = 1;
            tableau[i, columns] = sign * rhs;
            basis[i] = n + mGe + i;
        }

        // Phase 1: maximise −Σ artificials.
        var phase1 = new double[columns];
        for (int i = 0; i < m; i++)
        {
            phase1[n + mGe + i] = -1;
        }

        Optimize(tableau, basis, phase1, columns, allowed: columns);
        if (tableau[m, columns] < -Tolerance * Math.Max(1, Scale(tableau, m, columns)))
        {
            solution = [];
            return LinearProgramStatus.Infeasible;
        }

        // Drive artificials at level zero out of the basis where a real column can replace them.
        for (int i = 0; i < m; i++)
        {
            if (basis[i] < n + mGe)
            {
                continue;
            }

            for (int j = 0; j < n + mGe; j++)
            {
                if (Math.Abs(tableau[i, j]) > Tolerance)
                {
                    Pivot(tableau, basis, i, j, columns);
                    break;
                }
            }
        }

        // Phase 2: the real objective over the real columns only.
        var phase2 = new double[columns];
        Array.Copy(c, phase2, n);
        bool bounded = Optimize(tableau, basis, phase2, columns, allowed: n + mGe);
        if (!bounded)
        {
            solution = [];
            return LinearProgramStatus.Unbounded;
        }

        solution = new double[n];
        for (int i = 0; i < m; i++)
        {
            if (basis[i] < n)
            {
                solution[basis[i]] = Math.Max(0, tableau[i, columns]);
            }
        }

        return LinearProgramStatus.Optimal;
    }

    // Runs the simplex iterations for the objective; returns false when unbounded. Row m holds the reduced costs.
    private static bool Optimize(double[,] tableau, int[] basis, double[] cost, int columns, int allowed)
    {
        int m = basis.Length;
        for (int j = 0; j <= columns; j++)
        {
            double z = j == columns ? 0 : -cost[j];
            for (int i = 0; i < m; i++)
            {
                z += cost[basis[i]] * tableau[i, j];
            }

            tableau[m, j] = z;
        }

        for (int iteration = 0; iteration < 10_000; iteration++)
        {
            int entering = -1;
            for (int j = 0; j < allowed; j++)
            {
                if (tableau[m, j] < -Tolerance)
                {
                    entering = j;
                    break;
                }
            }

            if (entering < 0)
            {
                return true;
            }

            int leaving = -1;
            double best = double.PositiveInfinity;
            for (int i = 0; i < m; i++)
            {
                double a = tableau[i, entering];
                if (a > Tolerance)
                {
                    double ratio = tableau[i, columns] / a;
                    if (ratio < best - Tolerance || (leaving >= 0 && Math.Abs(ratio - best) <= Tolerance && basis[i] < basis[leaving]))
                    {
                        best = ratio;
                        leaving = i;
                    }
                }
            }

            if (leaving < 0)
            {
                return false;
            }

            Pivot(tableau, basis, leaving, entering, columns);
        }

        throw new InvalidOperationException("The simplex method did not converge in 10000 iterations.");
    }

    private static void Pivot(double[,] tableau, int[] basis, int row, int column, int columns)
    {
        int rows = tableau.GetLength(0);
        double pivot = tableau[row, column];
        for (int j = 0; j <= columns; j++)
        {
            tableau[row, j] /= pivot;
        }

        for (int i = 0; i < rows; i++)
        {
            double factor = tableau[i, column];
            if (i == row || factor == 0)
            {
                continue;
            }

            for (int j = 0; j <= columns; j++)
            {
                tableau[i, j] -= factor * tableau[row, j];
            }
        }

        basis[row] = column;
    }

    private static double Scale(double[,] tableau, int m, int columns)
    {
        double scale = 0;
        for (int i = 0; i < m; i++)
        {
            scale = Math.Max(scale, Math.Abs(tableau[i, columns]));
        }

        return scale;
    }
}
