using System.Globalization;

namespace WeightEnsembling.Zoo;

/// <summary>The options of the <c>figures</c> command (<see cref="SuiteFigures"/>); the defaults keep it near 10 minutes on 2 cores.</summary>
public sealed class FigureSettings
{
    /// <summary>Test-time adaptation steps of every WEMoE run (curves, routing maps, the landscape's WEMoE marker). The default value is 200.</summary>
    public int Steps { get; set; } = 200;

    /// <summary>Evaluate the adaptation curves every this many steps. The default value is 25.</summary>
    public int EvaluateEvery { get; set; } = 25;

    /// <summary>Test examples per task (the first ones of the test split): evaluated and, unlabelled, adapted on. The default value is 500.</summary>
    public int TestExamples { get; set; } = 500;

    /// <summary>Validation examples per task used to choose λ of task arithmetic and TIES. The default value is 500.</summary>
    public int ValidationExamples { get; set; } = 500;

    /// <summary>Loss-landscape grid points per axis over [−1, 1]. The default value is 21.</summary>
    public int Resolution { get; set; } = 21;

    /// <summary>Test examples per task for the loss landscapes (the first ones of <see cref="TestExamples"/>). The default value is 200 (441 grid points × 2 tasks × 200 examples: about 2 minutes on one core).</summary>
    public int LandscapeExamples { get; set; } = 200;

    /// <summary>Whether to draw the second landscape, (mnist, mnist-rot90). The default value is <see langword="false"/>.</summary>
    public bool ShiftPair { get; set; }

    /// <summary>PWEMoE training steps (linear scalarization, on the full validation splits). The default value is 200.</summary>
    public int ParetoSteps { get; set; } = 200;

    /// <summary>Grid values per coordinate of the preference grid (<c>SimplexGrid.Generate(n, m)</c>) for two tasks. The default value is 11.</summary>
    public int ParetoGrid2 { get; set; } = 11;

    /// <summary>Grid values per coordinate of the preference grid for three tasks. The default value is 6 (21 preferences).</summary>
    public int ParetoGrid3 { get; set; } = 6;

    /// <summary>Whether to adapt an E-WEMoE too and draw its routing maps. The default value is <see langword="true"/>.</summary>
    public bool EWemoe { get; set; } = true;

    /// <summary>
    /// libtorch's intra-op threads for the figures, or 0 to leave the setting alone. The default value is 1: on a shared,
    /// oversubscribed machine two threads were 5–10 times slower than one (docs/torchsharp-notes.md).
    /// </summary>
    public int Threads { get; set; } = 1;

    /// <summary>The figure groups to draw: <see cref="Groups"/> by default, fewer with <c>--only</c> to redraw one group.</summary>
    public IReadOnlySet<string> Only { get; set; } = new HashSet<string>(Groups, StringComparer.Ordinal);

    /// <summary>The figure groups, in the order they are drawn: landscape, pareto, adaptation (curves and WEMoE routing maps), ewemoe.</summary>
    public static IReadOnlyList<string> Groups { get; } = ["landscape", "pareto", "adaptation", "ewemoe"];

    /// <summary>The seed of router initialisation, data order and preference draws. The default value is 0.</summary>
    public int Seed { get; set; }

    /// <summary>
    /// Reads <c>--steps N --every N --examples N --val-examples N --resolution N --landscape-examples N --pareto-steps N
    /// --pareto-grid2 N --pareto-grid3 N --seed N --threads N --shift-pair --no-ewemoe --only GROUP[,GROUP]</c>; a bare number is <see cref="Steps"/>.
    /// </summary>
    /// <param name="args">The arguments after DATA ZOO OUT.</param>
    /// <returns>The settings.</returns>
    /// <exception cref="ArgumentException">An unknown option or a bad number.</exception>
    public static FigureSettings Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var settings = new FigureSettings();
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            int Next() => i + 1 < args.Count
                ? int.Parse(args[++i], CultureInfo.InvariantCulture)
                : throw new ArgumentException($"Option {arg} needs a number.", nameof(args));
            switch (arg)
            {
                case "--steps": settings.Steps = Next(); break;
                case "--every": settings.EvaluateEvery = Next(); break;
                case "--examples": settings.TestExamples = Next(); break;
                case "--val-examples": settings.ValidationExamples = Next(); break;
                case "--resolution": settings.Resolution = Next(); break;
                case "--landscape-examples": settings.LandscapeExamples = Next(); break;
                case "--pareto-steps": settings.ParetoSteps = Next(); break;
                case "--pareto-grid2": settings.ParetoGrid2 = Next(); break;
                case "--pareto-grid3": settings.ParetoGrid3 = Next(); break;
                case "--seed": settings.Seed = Next(); break;
                case "--threads": settings.Threads = Next(); break;
                case "--shift-pair": settings.ShiftPair = true; break;
                case "--no-ewemoe": settings.EWemoe = false; break;
                case "--only":
                    var only = i + 1 < args.Count
                        ? args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                        : throw new ArgumentException("Option --only needs a comma-separated list of figure groups.", nameof(args));
                    var unknown = only.FirstOrDefault(g => !Groups.Contains(g));
                    settings.Only = unknown is null && only.Length > 0
                        ? new HashSet<string>(only, StringComparer.Ordinal)
                        : throw new ArgumentException($"Unknown figure group '{unknown}' in --only; the groups are {string.Join(", ", Groups)}.", nameof(args));
                    break;
                default:
                    settings.Steps = int.TryParse(arg, NumberStyles.Integer, CultureInfo.InvariantCulture, out int steps)
                        ? steps
                        : throw new ArgumentException($"Unknown figures option '{arg}'.", nameof(args));
                    break;
            }
        }

        if (settings.Steps < 1 || settings.EvaluateEvery < 1 || settings.TestExamples < 1 || settings.ValidationExamples < 1
            || settings.Threads < 0 || settings.Resolution < 2 || settings.LandscapeExamples < 1 || settings.ParetoSteps < 1 || settings.ParetoGrid2 < 2 || settings.ParetoGrid3 < 2)
        {
            throw new ArgumentException("Every figures option must be positive (resolution and grids at least 2).", nameof(args));
        }

        return settings;
    }
}
