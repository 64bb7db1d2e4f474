using Spectre.Console;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Experiments;
using WeightEnsembling.Tasks;
using WeightEnsembling.Zoo;

// QuickStart: six real tasks (Fashion-MNIST, OpenCV's handwritten digits and the UCI optical digits, each upright and
// under a domain shift), one small CLIP-architecture vision transformer and six fine-tuned copies of it, shipped in
// assets/ (reproducible with tools/WeightEnsemblingMoE.Zoo). It merges the six experts into one model with several
// methods and prints the papers' table: test accuracy per task, the average last.
torch.set_num_threads(Environment.ProcessorCount);
torch.manual_seed(0);
string assets = Path.Combine(AppContext.BaseDirectory, "assets");
AnsiConsole.MarkupLine("[bold]WeightEnsemblingMoE[/] QuickStart: merge six fine-tuned vision transformers into one model.");

using var pretrained = ClipVisionModel.FromPretrained(Path.Combine(assets, "zoo", "pretrained"));
var experts = SuiteTask.All.Select(t => ClipVisionModel.FromPretrained(Path.Combine(assets, "zoo", t.Name))).ToList();
var tasks = SuiteTask.All.Select(t => new BenchmarkTask(
    t.Name,
    t.Load(Path.Combine(assets, "data"), "val"),
    t.Load(Path.Combine(assets, "data"), "test"),
    TaskHead.Load(Path.Combine(assets, "zoo", "heads", $"{t.Name}.safetensors")))).ToList();
AnsiConsole.MarkupLine($"Loaded the zoo ({pretrained.parameters().Sum(p => p.numel()):N0} parameters per model) and {tasks.Sum(t => t.Test.Count):N0} test images over {tasks.Count} tasks.");

MergingMethod[] methods =
[
    MergingMethod.Pretrained, MergingMethod.Individual, MergingMethod.TaskArithmetic, MergingMethod.Ties,
    MergingMethod.AdaMergingLayerWise, MergingMethod.Wemoe, MergingMethod.EWemoe,
];
var results = new List<MethodResult>();
AnsiConsole.Progress()
    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
    .Start(context =>
    {
        var bars = methods.ToDictionary(m => m, m => context.AddTask(MergingBenchmark.Label(m), autoStart: false, maxValue: 1));
        foreach (var method in methods)
        {
            bars[method].StartTask();
            var options = new MergingBenchmarkOptions { Methods = [method], AdaptationSteps = 200 };
            results.AddRange(MergingBenchmark.Run(pretrained, experts, tasks, options));
            bars[method].Value = 1;
            bars[method].StopTask();
        }
    });

var table = new Table().Title("Test accuracy (%)").AddColumn("Method");
foreach (var task in tasks)
{
    table.AddColumn(new TableColumn(task.Name).RightAligned());
}

table.AddColumn(new TableColumn("[bold]Avg.[/]").RightAligned()).AddColumn(new TableColumn("time").RightAligned());
foreach (var result in results)
{
    var cells = new List<string> { result.Report.Method };
    cells.AddRange(result.Report.Scores.Select(s => $"{s.Accuracy * 100:F1}"));
    cells.Add($"[bold]{result.Report.AverageAccuracy * 100:F1}[/]");
    cells.Add($"{result.Elapsed.TotalSeconds:F0} s");
    table.AddRow(cells.ToArray());
}

AnsiConsole.Write(table);
var wemoe = results.Single(r => r.Method == MergingMethod.Wemoe);
var arithmetic = results.Single(r => r.Method == MergingMethod.TaskArithmetic);
var individual = results.Single(r => r.Method == MergingMethod.Individual);
AnsiConsole.MarkupLine(
    $"One WEMoE model for all six tasks: {wemoe.Report.AverageAccuracy * 100:F1}% on average; task arithmetic "
    + $"{arithmetic.Report.AverageAccuracy * 100:F1}%; six separate experts {individual.Report.AverageAccuracy * 100:F1}%.");
AnsiConsole.MarkupLine($"WEMoE's routers ({wemoe.Parameters!.Trainable:N0} parameters) were trained by test-time adaptation on unlabeled test images only ({wemoe.Detail}).");
if (wemoe.Report.AverageAccuracy <= arithmetic.Report.AverageAccuracy)
{
    AnsiConsole.MarkupLine(
        "[yellow]On this small suite, entropy-minimising test-time adaptation does not beat task arithmetic (the papers' "
        + "CLIP models show it does there): docs/results/diagnosis.md shows why, with the evidence.[/]");
}

experts.ForEach(e => e.Dispose());
tasks.ForEach(t => { t.Validation.Dispose(); t.Test.Dispose(); t.Head.Dispose(); });
