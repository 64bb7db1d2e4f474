using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace WeightEnsembling.Pareto;

/// <summary>
/// Exact Pareto optimal (EPO) search, Mahapatra &amp; Rajan (ICML 2020), as PWEMoE uses it: from the task losses l, the
/// Gram matrix C = G·Gᵀ of their gradients and a preference r, one or two small linear programs give loss weights α on
/// the simplex. Off the preference ray (non-uniformity μ of r⊙l above ε) the balance LP moves toward the ray; on it the
/// descent LP lowers every loss. The LPs are solved exactly by a dense simplex method (T ≤ 16).
/// </summary>
/// <remarks>
/// Fallbacks are logged, never silent: an infeasible balance or descent LP falls back to the relaxed descent LP
/// (information), and if that fails too the weights are the normalised preference (warning).
/// </remarks>
public sealed class EpoSolver
{
    /// <summary>The largest number of tasks the dense simplex method accepts.</summary>
    public const int MaxTasks = 16;

    private readonly ILogger logger;

    /// <summary>Creates a solver.</summary>
    /// <param name="logger">Receives fallback messages. The default value is <see langword="null"/> (a null logger).</param>
    /// <param name="epsilon">The non-uniformity above which a step balances rather than descends. The default value is 1e-4, as in EPO.</param>
    public EpoSolver(ILogger? logger = null, double epsilon = 1e-4)
    {
        if (!(epsilon >= 0) || double.IsInfinity(epsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "The non-uniformity threshold ε must be finite and non-negative.");
        }

        this.logger = logger ?? NullLogger.Instance;
        Epsilon = epsilon;
    }

    /// <summary>The non-uniformity threshold ε.</summary>
    public double Epsilon { get; }

    /// <summary>Computes the loss weights α of one EPO step.</summary>
    /// <param name="losses">The task losses l_t, finite and non-negative.</param>
    /// <param name="gram">The Gram matrix C = G·Gᵀ [T, T] of the task gradients, finite.</param>
    /// <param name="preference">The preference r, finite and non-negative with a positive sum (normalised here).</param>
    /// <returns>The weights α and the LP that produced them.</returns>
    /// <exception cref="ArgumentException">The lengths differ, T exceeds <see cref="MaxTasks"/>, or an input is not finite or negative.</exception>
    public EpoSolution Solve(IReadOnlyList<double> losses, double[,] gram, IReadOnlyList<double> preference)
    {
        ArgumentNullException.ThrowIfNull(losses);
        ArgumentNullException.ThrowIfNull(gram);
        ArgumentNullException.ThrowIfNull(preference);
        int m = losses.Count;
        ArgumentOutOfRangeException.ThrowIfZero(m, nameof(losses));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(m, MaxTasks, nameof(losses));
        if (preference.Count != m || gram.GetLength(0) != m || gram.GetLength(1) != m)
        {
            throw new ArgumentException(
                $"EPO needs {m} losses, a [{m}, {m}] Gram matrix and {m} preference entries; got a [{gram.GetLength(0)}, {gram.GetLength(1)}] matrix and {preference.Count} entries.",
                nameof(gram));
        }

        for (int t = 0; t < m; t++)
        {
            if (!double.IsFinite(losses[t]) || losses[t] < 0)
            {
                throw new ArgumentException($"Loss {t} is {losses[t]}; EPO needs finite, non-negative losses.", nameof(losses));
            }

            if (!double.IsFinite(preference[t]) || preference[t] < 0)
            {
                throw new ArgumentException($"Preference entry {t} is {preference[t]}; it must be finite and non-negative.", nameof(preference));
            }
        }

        double scale = 0;
        foreach (var value in gram)
        {
            if (!double.IsFinite(value))
            {
                throw new ArgumentException("The Gram matrix contains NaN or Inf.", nameof(gram));
            }

            scale = Math.Max(scale, Math.Abs(value));
        }

        double preferenceSum = preference.Sum();
        if (!(preferenceSum > 0))
        {
            throw new ArgumentException("The preference sums to zero.", nameof(preference));
        }

        var r = preference.Select(v => v / preferenceSum).ToArray();

        // Adjustments a = r ⊙ (log(l̂ m) − μ) with l̂ = r⊙l / Σ r⊙l; log clamped away from zero losses.
        var rl = new double[m];
        for (int t = 0; t < m; t++)
        {
            rl[t] = r[t] * losses[t];
        }

        double rlSum = rl.Sum();
        var lHat = rl.Select(v => rlSum > 0 ? v / rlSum : 1.0 / m).ToArray();
        double mu = lHat.Where(v => v > 2.220446049250313e-16).Sum(v => v * Math.Log(v * m));
        var a = new double[m];
        for (int t = 0; t < m; t++)
        {
            a[t] = r[t] * (Math.Log(Math.Max(lHat[t], 1e-12) * m) - mu);
        }

        // The LPs are invariant to a positive scaling of C: normalise it for the simplex method's tolerances.
        var c = new double[m, m];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < m; j++)
            {
                c[i, j] = scale > 0 ? gram[i, j] / scale : 0;
            }
        }

        var ca = new double[m];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < m; j++)
            {
                ca[i] += c[i, j] * a[j];
            }
        }

        var columnSums = new double[m];
        for (int j = 0; j < m; j++)
        {
            for (int i = 0; i < m; i++)
            {
                columnSums[j] += c[i, j];
            }
        }

        double[]? alpha;
        EpoMove move;
        if (mu > Epsilon)
        {
            move = EpoMove.Balance;
            alpha = SolveBalance(c, ca, rl);
        }
        else
        {
            move = EpoMove.Descent;
            double bound = Math.Min(ca.Max(), 0);
            alpha = SolveOnSimplex(columnSums, c, Enumerable.Repeat(0.0, m).ToArray(), extraRow: ca, extraBound: bound);
        }

        if (alpha is null)
        {
            logger.LogInformation("EPO: the {Move} LP is infeasible (μ = {Mu}); falling back to the relaxed descent LP.", move, mu);
            move = EpoMove.RelaxedDescent;
            alpha = SolveOnSimplex(columnSums, c, Enumerable.Repeat(0.0, m).ToArray(), extraRow: null, extraBound: 0);
        }

        if (alpha is null)
        {
            logger.LogWarning("EPO: the relaxed descent LP failed too (μ = {Mu}); using the normalised preference as loss weights.", mu);
            move = EpoMove.PreferenceFallback;
            alpha = r;
        }

        return new EpoSolution(alpha, move, mu);
    }

    // Balance: max αᵀCa s.t. α on the simplex, (Cα)_j ≥ rhs_j; rows with Ca_j > 0 are free, except the largest r⊙l (≥ 0).
    private static double[]? SolveBalance(double[,] c, double[] ca, double[] rl)
    {
        int m = ca.Length;
        var rhs = new double[m];
        var keep = new bool[m];
        if (ca.Any(v => v > 0))
        {
            double maxRl = rl.Max();
            for (int j = 0; j < m; j++)
            {
                bool isStar = rl[j] == maxRl;
                keep[j] = isStar || ca[j] <= 0;
                rhs[j] = isStar ? 0 : ca[j];
            }
        }
        else
        {
            Array.Fill(keep, true);
        }

        return SolveOnSimplex(ca, c, rhs, extraRow: null, extraBound: 0, keep);
    }

    // max objᵀα s.t. Σα = 1, α ≥ 0, (Cα)_j ≥ rhs_j for the kept rows, and extraRowᵀα ≥ extraBound when given.
    private static double[]? SolveOnSimplex(double[] objective, double[,] c, double[] rhs, double[]? extraRow, double extraBound, bool[]? keep = null)
    {
        int m = objective.Length;
        var rows = Enumerable.Range(0, m).Where(j => keep?[j] ?? true).ToList();
        int ge = rows.Count + (extraRow is null ? 0 : 1);
        var aGe = new double[ge, m];
        var bGe = new double[ge];
        for (int k = 0; k < rows.Count; k++)
        {
            for (int i = 0; i < m; i++)
            {
                aGe[k, i] = c[rows[k], i];
            }

            bGe[k] = rhs[rows[k]];
        }

        if (extraRow is not null)
        {
            for (int i = 0; i < m; i++)
            {
                aGe[ge - 1, i] = extraRow[i];
            }

            bGe[ge - 1] = extraBound;
        }

        var aEq = new double[1, m];
        for (int i = 0; i < m; i++)
        {
            aEq[0, i] = 1;
        }

        var status = DenseSimplex.Maximize(objective, aEq, [1.0], aGe, bGe, out var solution);
        if (status != LinearProgramStatus.Optimal)
        {
            return null;
        }

        double sum = solution.Sum();
        return solution.Select(v => v / sum).ToArray();
    }
}
