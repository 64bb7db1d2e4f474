using System.Diagnostics;
using Spectre.Console;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.Models;
using WeightEnsembling.Tasks;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

// QuickStart: six real tasks (Fashion-MNIST, OpenCV's handwritten digits and the UCI optical digits, each upright and
// under a domain shift), one small CLIP-architecture vision transformer and six fine-tuned copies of it, shipped in
// assets/ (made by tools/WeightEnsemblingMoE.Zoo). The whole data path is in this file: load the data and the model pool,
// merge with the baselines, upcycle into WEMoE and E-WEMoE, adapt the routers on unlabelled test images, evaluate, save
// and reload the routers, and print the papers' table: test accuracy per task, the average last.
torch.set_num_threads(Environment.ProcessorCount);
torch.manual_seed(0);
string assets = Path.Combine(AppContext.BaseDirectory, "assets");
AnsiConsole.MarkupLine("[bold]WeightEnsemblingMoE[/] QuickStart: merge six fine-tuned vision transformers into one model.");

// 1. The tasks: a dataset, an optional domain shift, and the frozen zero-shot-form head each expert was fine-tuned with.
(string Name, string Dataset, string Shift)[] definitions =
[
    ("fashion", "fashion", "none"), ("mnist", "mnist", "none"), ("uci-digits", "uci", "none"),
    ("fashion-inverted", "fashion", "invert"), ("mnist-rot90", "mnist", "rot90"), ("uci-digits-inverted", "uci", "invert"),
];
InMemoryTaskDataset Load(string name, string dataset, string shift, string split)
{
    using var scope = NewDisposeScope();
    using var raw = IdxReader.Read(Path.Combine(assets, "data", $"{dataset}-{split}-images.idx.gz"));
    using var labels = IdxReader.Read(Path.Combine(assets, "data", $"{dataset}-{split}-labels.idx.gz"));
    var images = raw.to(ScalarType.Float32).unsqueeze(1) / 255f;
    images = shift switch
    {
        "invert" => 1f - images,
        "rot90" => images.rot90(1, (2, 3)),
        _ => images,
    };
    return new InMemoryTaskDataset(name, (images - 0.5f) / 0.5f, labels.to(ScalarType.Int64), classCount: 10);
}

var validation = new List<ClassificationTask>();
var test = new List<ClassificationTask>();
foreach (var (name, dataset, shift) in definitions)
{
    var head = TaskHead.Load(Path.Combine(assets, "zoo", "heads", $"{name}.safetensors"));
    validation.Add(new ClassificationTask(name, Load(name, dataset, shift, "val"), head));
    test.Add(new ClassificationTask(name, Load(name, dataset, shift, "test"), head));
}

// 2. The model pool: θ_0 and the six experts, read from their Hugging Face folders and checked once.
var pool = ModelPool.FromFolders(
    Path.Combine(assets, "zoo", "pretrained"),
    definitions.Select(d => Path.Combine(assets, "zoo", d.Name)),
    definitions.Select(d => d.Name));
AnsiConsole.MarkupLine($"Loaded a pool of {pool.ExpertCount} experts and {test.Sum(t => t.Data.Count):N0} test images over {test.Count} tasks.");

const int steps = 200;
var results = new List<(EvaluationReport Report, TimeSpan Elapsed, string Detail)>();
bool interactive = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

// Runs one method under a progress bar that moves per step (adaptation) or per task (evaluation); a line per 50 steps
// when the output is not a terminal.
void Run(string method, int totalSteps, Func<Action<int>, (EvaluationReport Report, string Detail)> body)
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
    results.Add((result.Report, watch.Elapsed, result.Detail));
    AnsiConsole.MarkupLine($"{Markup.Escape(method)}: average {result.Report.AverageAccuracy * 100:F1}% ({watch.Elapsed.TotalSeconds:F0} s)");
}

IProgress<TaskScore> PerTask(Action<int> report)
{
    int done = 0;
    return new SynchronousProgress<TaskScore>(_ => report(++done));
}

IProgress<AdaptationProgress> PerStep(Action<int> report) =>
    new SynchronousProgress<AdaptationProgress>(p => report(p.Step));

var adaptation = new AdaptationOptions { Steps = steps, BatchSize = 16, LearningRate = 1e-4, Seed = 0 };
double[] lambdas = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

// 3. Reference points and the static merges (λ chosen on validation, as the papers do).
Run("Pre-trained", test.Count, report =>
{
    using var model = pool.LoadPretrainedModel();
    return (ModelEvaluator.Evaluate("Pre-trained", model, test, progress: PerTask(report)), "");
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
(EvaluationReport, string) SearchLambda(string method, Func<double, ClipVisionModel> merge, Action<int> report)
{
    double best = lambdas[0], bestAccuracy = double.NegativeInfinity;
    for (int i = 0; i < lambdas.Length; i++)
    {
        using var candidate = merge(lambdas[i]);
        double accuracy = ModelEvaluator.Evaluate(method, candidate, validation).AverageAccuracy;
        (best, bestAccuracy) = accuracy > bestAccuracy ? (lambdas[i], accuracy) : (best, bestAccuracy);
        report(i + 1);
    }

    using var chosen = merge(best);
    return (ModelEvaluator.Evaluate(method, chosen, test), $"λ = {best} (validation {bestAccuracy * 100:F1}%)");
}

Run("Task arithmetic", lambdas.Length, report => SearchLambda("Task arithmetic", l => ModelMerging.TaskArithmetic(pool, l), report));
Run("TIES-merging", lambdas.Length, report => SearchLambda("TIES-merging", l => ModelMerging.Ties(pool, new TiesMergingOptions { ScalingFactor = l }), report));

// 4. AdaMerging: layer-wise merging coefficients trained by entropy minimisation, then merged into a plain model.
Run("AdaMerging (layer-wise)", steps, report =>
{
    using var model = AdaMergingModel.Create(pool);
    var options = adaptation.Clone();
    options.LearningRate = 1e-3;
    new AdaptationTrainer().Adapt(model, test, options, PerStep(report));
    using var merged = model.MergeAndUnload();
    return (ModelEvaluator.Evaluate("AdaMerging (layer-wise)", merged, test), $"{steps} steps, lr 1e-3");
});

// 5. WEMoE and E-WEMoE: upcycle the pool, train only the routers on unlabelled test batches, evaluate per sample.
string saved = Path.Combine(Path.GetTempPath(), "wemoe-quickstart-routers");
EvaluationReport? wemoeReport = null;
long wemoeTrainable = 0;
Run("WEMoE (2-layer)", steps, report =>
{
    using var upscaled = ModelUpscaler.For(pool).WithRouterDepth(2).WithInitLambda(0.3).WithSeed(0).Build();
    new AdaptationTrainer().Adapt(upscaled, test, adaptation, PerStep(report));
    wemoeReport = ModelEvaluator.Evaluate("WEMoE (2-layer)", upscaled, test);
    wemoeTrainable = upscaled.CountParameters().Trainable;
    upscaled.SavePretrained(saved);
    return (wemoeReport, $"{steps} steps, lr 1e-4");
});
Run("E-WEMoE (p = 0.9)", steps, report =>
{
    using var upscaled = ModelUpscaler.For(pool)
        .WithSharedRouter(positionEncoding: true)
        .WithSeed(0)
        .WithTaskVectorStorage(WeightEnsembling.TaskVectors.TaskVectorStorageOptions.Sparse(0.9))
        .Build();
    new AdaptationTrainer().Adapt(upscaled, test, adaptation, PerStep(report));
    return (ModelEvaluator.Evaluate("E-WEMoE (p = 0.9)", upscaled, test), $"{steps} steps, lr 1e-4");
});

// 6. The saved routers rebuild the same model from the pool: what a service would load.
using (var reloaded = UpscaledModel.FromPretrained(saved, pool))
{
    var again = ModelEvaluator.Evaluate("WEMoE (reloaded)", reloaded, test);
    long bytes = Directory.GetFiles(saved).Sum(f => new FileInfo(f).Length);
    AnsiConsole.MarkupLine($"Routers saved to {Markup.Escape(saved)} ({bytes / 1024.0:F0} KB) and reloaded: average {again.AverageAccuracy * 100:F1}% "
        + (Math.Abs(again.AverageAccuracy - wemoeReport!.AverageAccuracy) < 1e-12 ? "(identical)." : "[red](differs!)[/]"));
}

// 7. The table.
var table = new Table().Title("Test accuracy (%)").AddColumn("Method");
foreach (var task in test)
{
    table.AddColumn(new TableColumn(task.Name).RightAligned());
}

table.AddColumn(new TableColumn("[bold]Avg.[/]").RightAligned()).AddColumn(new TableColumn("time").RightAligned());
foreach (var (report, elapsed, detail) in results)
{
    var cells = new List<string> { report.Method };
    cells.AddRange(report.Scores.Select(s => $"{s.Accuracy * 100:F1}"));
    cells.Add($"[bold]{report.AverageAccuracy * 100:F1}[/]");
    cells.Add($"{elapsed.TotalSeconds:F0} s");
    table.AddRow(cells.ToArray());
}

AnsiConsole.Write(table);
foreach (var (report, _, detail) in results.Where(r => r.Detail.Length > 0))
{
    AnsiConsole.MarkupLine($"  {Markup.Escape(report.Method)}: {Markup.Escape(detail)}");
}

double Average(string method) => results.Single(r => r.Report.Method == method).Report.AverageAccuracy * 100;
AnsiConsole.MarkupLine(
    $"One WEMoE model for all six tasks: {Average("WEMoE (2-layer)"):F1}% on average; task arithmetic "
    + $"{Average("Task arithmetic"):F1}%; six separate experts {Average("Individual"):F1}%.");
AnsiConsole.MarkupLine($"WEMoE's routers ({wemoeTrainable:N0} parameters) were trained by test-time adaptation on unlabelled test images only ({steps} steps).");
if (Average("WEMoE (2-layer)") <= Average("Task arithmetic"))
{
    AnsiConsole.MarkupLine(
        "[yellow]On this small suite, entropy-minimising test-time adaptation does not beat task arithmetic (the papers' "
        + "CLIP models show it does there): docs/results/diagnosis.md shows why, with the evidence.[/]");
}

foreach (var task in test.Concat(validation))
{
    task.Data.Dispose();
}

foreach (var head in test.Select(t => t.Head).Distinct())
{
    head.Dispose();
}

/// <summary>An <see cref="IProgress{T}"/> that reports on the caller's thread, so bars move while a step runs.</summary>
internal sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
