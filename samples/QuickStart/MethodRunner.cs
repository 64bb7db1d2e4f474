using System.Diagnostics;
using Spectre.Console;
using WeightEnsembling.Clip;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.Models;
using WeightEnsembling.Tasks;
using WeightEnsembling.Training;

namespace WeightEnsembling.Samples;

/// <summary>
/// Runs the QuickStart's methods one after the other, each under a progress bar that moves per step (adaptation) or per
/// task (evaluation), or a line per 50 steps when the output is not a terminal; collects each method's report and time
/// and prints the papers' table.
/// </summary>
internal sealed class MethodRunner
{
    private readonly bool interactive = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>When the output goes to a file, lines are not wrapped at 80 columns (the table is wider).</summary>
    public static void ConfigureConsole()
    {
        if (Console.IsOutputRedirected)
        {
            AnsiConsole.Profile.Width = 200;
        }
    }

    /// <summary>Each method's test report, wall time and a one-line detail (the λ chosen, the steps run).</summary>
    public List<(EvaluationReport Report, TimeSpan Elapsed, string Detail)> Results { get; } = [];

    /// <summary>Reports one step of a per-step progress bar per adaptation step.</summary>
    public static IProgress<AdaptationProgress> PerStep(Action<int> report) =>
        new SynchronousProgress<AdaptationProgress>(p => report(p.Step));

    /// <summary>Reports one step of a progress bar per evaluated task.</summary>
    public static IProgress<TaskScore> PerTask(Action<int> report)
    {
        int done = 0;
        return new SynchronousProgress<TaskScore>(_ => report(++done));
    }

    /// <summary>Runs <paramref name="body"/> (which reports its step count through the action it is given) and records its report.</summary>
    public void Run(string method, int totalSteps, Func<Action<int>, (EvaluationReport Report, string Detail)> body)
    {
        var watch = Stopwatch.StartNew();
        (EvaluationReport Report, string Detail)? outcome = null;
        if (interactive)
        {
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(context =>
                {
                    var bar = context.AddTask(method, maxValue: totalSteps);
                    outcome = body(step => bar.Value = step);
                    bar.Value = totalSteps;
                });
        }
        else
        {
            Console.WriteLine($"{method}: started");
            outcome = body(step =>
            {
                if (step % 50 == 0)
                {
                    Console.WriteLine($"{method}: step {step}/{totalSteps}");
                }
            });
        }

        var result = outcome ?? throw new InvalidOperationException($"{method} returned no result.");
        Results.Add((result.Report, watch.Elapsed, result.Detail));
        AnsiConsole.MarkupLine($"{Markup.Escape(method)}: average {result.Report.AverageAccuracy * 100:F1}% ({watch.Elapsed.TotalSeconds:F0} s)");
    }

    /// <summary>
    /// Chooses λ among <paramref name="lambdas"/> by average validation accuracy (as the papers do), then evaluates the
    /// chosen merge on the test splits.
    /// </summary>
    private static (EvaluationReport Report, string Detail) SearchLambda(
        string method,
        IReadOnlyList<double> lambdas,
        IReadOnlyList<ClassificationTask> validation,
        IReadOnlyList<ClassificationTask> test,
        Func<double, ClipVisionModel> merge,
        Action<int> report)
    {
        double best = lambdas[0], bestAccuracy = double.NegativeInfinity;
        for (int i = 0; i < lambdas.Count; i++)
        {
            using var candidate = merge(lambdas[i]);
            double accuracy = ModelEvaluator.Evaluate(method, candidate, validation).AverageAccuracy;
            (best, bestAccuracy) = accuracy > bestAccuracy ? (lambdas[i], accuracy) : (best, bestAccuracy);
            report(i + 1);
        }

        using var chosen = merge(best);
        return (ModelEvaluator.Evaluate(method, chosen, test), $"λ = {best} (validation {bestAccuracy * 100:F1}%)");
    }

    /// <summary>
    /// The reference points and the papers' baselines, as both QuickStart suites run them: the pre-trained model (named
    /// <paramref name="pretrainedName"/>), each expert on its own task, task arithmetic and TIES with λ chosen on
    /// validation, and layer-wise AdaMerging (its coefficients trained by entropy minimisation with
    /// <paramref name="adaptation"/> at lr 1e-3, then merged into a plain model).
    /// </summary>
    public void RunBaselines(string pretrainedName, ModelPool pool, IReadOnlyList<ClassificationTask> validation, IReadOnlyList<ClassificationTask> test, AdaptationOptions adaptation)
    {
        double[] lambdas = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
        Run(pretrainedName, test.Count, report =>
        {
            using var model = pool.LoadPretrainedModel();
            return (ModelEvaluator.Evaluate(pretrainedName, model, test, progress: PerTask(report)), "");
        });
        Run("Individual", test.Count, report =>
        {
            var scores = new List<TaskScore>();
            for (int t = 0; t < test.Count; t++)
            {
                using var expert = pool.LoadExpertModel(t);
                scores.Add(ModelEvaluator.Evaluate("Individual", expert, [test[t]]).Scores[0]);
                report(t + 1);
            }

            return (new EvaluationReport("Individual", scores), "each expert on its own task");
        });
        Run("Task arithmetic", lambdas.Length, report => SearchLambda("Task arithmetic", lambdas, validation, test, l => ModelMerging.TaskArithmetic(pool, l), report));
        Run("TIES-merging", lambdas.Length, report => SearchLambda("TIES-merging", lambdas, validation, test, l => ModelMerging.Ties(pool, new TiesMergingOptions { ScalingFactor = l }), report));
        Run("AdaMerging (layer-wise)", adaptation.Steps, report =>
        {
            using var model = AdaMergingModel.Create(pool);
            var options = adaptation.Clone();
            options.LearningRate = 1e-3;
            new AdaptationTrainer().Adapt(model, test, options, PerStep(report));
            using var merged = model.MergeAndUnload();
            return (ModelEvaluator.Evaluate("AdaMerging (layer-wise)", merged, test), $"{adaptation.Steps} steps, lr 1e-3");
        });
    }

    /// <summary>The average test accuracy (%) of <paramref name="method"/>.</summary>
    public double Average(string method) => Results.Single(r => r.Report.Method == method).Report.AverageAccuracy * 100;

    /// <summary>Prints the table (test accuracy per task, the average, the time) and each method's detail line.</summary>
    public void PrintTable(IEnumerable<string> taskNames)
    {
        var table = new Table().Title("Test accuracy (%)").AddColumn("Method");
        foreach (string task in taskNames)
        {
            table.AddColumn(new TableColumn(task).RightAligned());
        }

        table.AddColumn(new TableColumn("[bold]Avg.[/]").RightAligned()).AddColumn(new TableColumn("time").RightAligned());
        foreach (var (report, elapsed, _) in Results)
        {
            var cells = new List<string> { Markup.Escape(report.Method) };
            cells.AddRange(report.Scores.Select(s => $"{s.Accuracy * 100:F1}"));
            cells.Add($"[bold]{report.AverageAccuracy * 100:F1}[/]");
            cells.Add($"{elapsed.TotalSeconds:F0} s");
            table.AddRow(cells.ToArray());
        }

        AnsiConsole.Write(table);
        foreach (var (report, _, detail) in Results.Where(r => r.Detail.Length > 0))
        {
            AnsiConsole.MarkupLine($"  {Markup.Escape(report.Method)}: {Markup.Escape(detail)}");
        }
    }
}
