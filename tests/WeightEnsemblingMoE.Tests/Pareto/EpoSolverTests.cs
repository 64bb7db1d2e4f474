using Microsoft.Extensions.Logging;
using WeightEnsembling.Pareto;

namespace WeightEnsembling.Tests.Pareto;

[TestFixture, NonParallelizable]
public sealed class EpoSolverTests
{
    [Test]
    public void Maximize_SimplexOnly_PicksBestVertex()
    {
        // max x1 + 2 x2 s.t. x1 + x2 = 1, x ≥ 0  →  x = (0, 1).
        var status = DenseSimplex.Maximize([1, 2], new double[,] { { 1, 1 } }, [1], new double[0, 2], [], out var x);
        Assert.That(status, Is.EqualTo(LinearProgramStatus.Optimal));
        Assert.That(x, Is.EqualTo(new[] { 0.0, 1.0 }).Within(1e-12));
    }

    [Test]
    public void Maximize_BindingInequality_ReturnsHandSolvedVertex()
    {
        // max x2 s.t. x1 + x2 = 1, x1 − x2 ≥ 0.5  →  x1 = 0.75, x2 = 0.25.
        var status = DenseSimplex.Maximize([0, 1], new double[,] { { 1, 1 } }, [1], new double[,] { { 1, -1 } }, [0.5], out var x);
        Assert.That(status, Is.EqualTo(LinearProgramStatus.Optimal));
        Assert.That(x, Is.EqualTo(new[] { 0.75, 0.25 }).Within(1e-12));
    }

    [Test]
    public void Maximize_NegativeRightHandSide_ReturnsHandSolvedVertex()
    {
        // max x1 s.t. x1 + x2 + x3 = 1, −x1 + x3 ≥ −0.4: x3 ≥ x1 − 0.4 and x3 ≤ 1 − x1 give x1 ≤ 0.7  →  (0.7, 0, 0.3).
        var status = DenseSimplex.Maximize([1, 0, 0], new double[,] { { 1, 1, 1 } }, [1], new double[,] { { -1, 0, 1 } }, [-0.4], out var x);
        Assert.That(status, Is.EqualTo(LinearProgramStatus.Optimal));
        Assert.That(x, Is.EqualTo(new[] { 0.7, 0.0, 0.3 }).Within(1e-12));
    }

    [Test]
    public void Maximize_ContradictoryConstraints_ReportsInfeasible()
    {
        // x1 + x2 = 1 and x1 ≥ 2 cannot both hold.
        var status = DenseSimplex.Maximize([1, 1], new double[,] { { 1, 1 } }, [1], new double[,] { { 1, 0 } }, [2], out _);
        Assert.That(status, Is.EqualTo(LinearProgramStatus.Infeasible));
    }

    [Test]
    public void Maximize_NoUpperBound_ReportsUnbounded()
    {
        // max x1 s.t. x1 − x2 = 0: x1 = x2 can grow forever.
        var status = DenseSimplex.Maximize([1, 0], new double[,] { { 1, -1 } }, [0], new double[0, 2], [], out _);
        Assert.That(status, Is.EqualTo(LinearProgramStatus.Unbounded));
    }

    [Test]
    public void Solve_OrthogonalGradientsOffTheRay_BalancesTowardTheLargerLoss()
    {
        // C = I, l = (2, 1), r = (1/2, 1/2): μ > 0, Ca = a = (0.1155, −0.2310); J = J* = {0}; max 0.1155 α0 − 0.2310 α1
        // s.t. α0 ≥ 0 (J*), α1 ≥ −0.2310 (free)  →  α = (1, 0).
        var solution = new EpoSolver().Solve([2, 1], new double[,] { { 1, 0 }, { 0, 1 } }, [0.5, 0.5]);
        Assert.That(solution.Move, Is.EqualTo(EpoMove.Balance));
        Assert.That(solution.NonUniformity, Is.EqualTo(2.0 / 3 * Math.Log(4.0 / 3) + 1.0 / 3 * Math.Log(2.0 / 3)).Within(1e-12));
        Assert.That(solution.Alpha, Is.EqualTo(new[] { 1.0, 0.0 }).Within(1e-9));
    }

    [Test]
    public void Solve_ConflictingGradientsOffTheRay_MatchesHandSolvedBalanceLp()
    {
        // C = [[1, −0.8], [−0.8, 1]], l = (2, 1), r = (1/2, 1/2): a = (0.115525, −0.231049), Ca = (0.300364, −0.323469).
        // J = J* = {0}. Constraints: α0 − 0.8 α1 ≥ 0 and −0.8 α0 + α1 ≥ Ca_1, i.e. α0 ≤ (1 − Ca_1) / 1.8 = 0.735260.
        // The objective 0.300364 α0 − 0.323469 α1 grows with α0, so α0 = 0.7352603801, α1 = 0.2647396199.
        var solution = new EpoSolver().Solve([2, 1], new double[,] { { 1, -0.8 }, { -0.8, 1 } }, [0.5, 0.5]);
        Assert.That(solution.Move, Is.EqualTo(EpoMove.Balance));
        Assert.That(solution.Alpha, Is.EqualTo(new[] { 0.7352603801, 0.2647396199 }).Within(1e-9));
    }

    [Test]
    public void Solve_OnTheRay_DescendsWithCommonDescentDirection()
    {
        // l = (1, 1), r = (1/2, 1/2): μ = 0, a = 0. C = [[1, −0.5], [−0.5, 2]]: max 0.5 α0 + 1.5 α1 s.t. Cα ≥ 0, i.e.
        // α0 ≥ 0.5 α1 and 2 α1 ≥ 0.5 α0; the first binds: α = (1/3, 2/3).
        var solution = new EpoSolver().Solve([1, 1], new double[,] { { 1, -0.5 }, { -0.5, 2 } }, [0.5, 0.5]);
        Assert.That(solution.Move, Is.EqualTo(EpoMove.Descent));
        Assert.That(solution.Alpha, Is.EqualTo(new[] { 1.0 / 3, 2.0 / 3 }).Within(1e-9));
    }

    [Test]
    public void Solve_ScaledGram_SameWeights()
    {
        var small = new EpoSolver().Solve([2, 1, 0.5], new double[,] { { 1, -0.2, 0.1 }, { -0.2, 2, 0.3 }, { 0.1, 0.3, 0.5 } }, [0.2, 0.3, 0.5]);
        var large = new EpoSolver().Solve([2, 1, 0.5], new double[,] { { 1e6, -0.2e6, 0.1e6 }, { -0.2e6, 2e6, 0.3e6 }, { 0.1e6, 0.3e6, 0.5e6 } }, [0.2, 0.3, 0.5]);
        Assert.That(large.Alpha, Is.EqualTo(small.Alpha).Within(1e-9));
        Assert.That(small.Alpha.Sum(), Is.EqualTo(1).Within(1e-12));
    }

    [Test]
    public void Solve_EveryLpInfeasible_FallsBackToPreferenceAndLogs()
    {
        // l on the ray (μ = 0) → descent LP. With every entry of C negative (not a Gram matrix, on purpose) no α on the
        // simplex gives Cα ≥ 0: the descent LP and the relaxed LP are infeasible, and both fallbacks are logged.
        var logger = new ListLogger();
        var solver = new EpoSolver(logger);
        var solution = solver.Solve([1, 1], new double[,] { { -1, -1 }, { -1, -1 } }, [0.5, 0.5]);
        Assert.That(solution.Move, Is.EqualTo(EpoMove.PreferenceFallback));
        Assert.That(solution.Alpha, Is.EqualTo(new[] { 0.5, 0.5 }).Within(1e-12));
        Assert.That(logger.Messages, Has.Count.EqualTo(2));
        Assert.That(logger.Messages[0], Does.Contain("relaxed"));
        Assert.That(logger.Levels[1], Is.EqualTo(LogLevel.Warning));
    }

    [Test]
    public void Solve_MismatchedLengths_ThrowsNamingShapes()
    {
        var error = Assert.Throws<ArgumentException>(() => new EpoSolver().Solve([1, 2], new double[,] { { 1 } }, [0.5, 0.5]));
        Assert.That(error!.Message, Does.Contain("[1, 1]"));
    }

    [Test]
    public void Sample_ManyDraws_OnSimplexWithDirichletMean()
    {
        var sampler = new DirichletSampler(3, 1.0, seed: 4);
        var sum = new double[3];
        const int draws = 4000;
        for (int i = 0; i < draws; i++)
        {
            var p = sampler.Sample();
            Assert.That(p.Sum(), Is.EqualTo(1).Within(1e-12));
            Assert.That(p, Has.All.GreaterThanOrEqualTo(0));
            for (int t = 0; t < 3; t++)
            {
                sum[t] += p[t];
            }
        }

        // Mean 1/3 each; the standard error of a mean of 4000 Dirichlet(1,1,1) coordinates is ≈ 0.0037.
        Assert.That(sum.Select(s => s / draws), Has.All.EqualTo(1.0 / 3).Within(0.02));
        Assert.That(new DirichletSampler(3, 1.0, seed: 4).Sample(), Is.EqualTo(new DirichletSampler(3, 1.0, seed: 4).Sample()));
    }

    private sealed class ListLogger : ILogger
    {
        public List<string> Messages { get; } = [];

        public List<LogLevel> Levels { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            Messages.Add(formatter(state, exception));
            Levels.Add(logLevel);
        }
    }
}
