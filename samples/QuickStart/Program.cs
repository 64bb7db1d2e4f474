using System.Text.Json;
using Spectre.Console;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Data;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Images;
using WeightEnsembling.Models;
using WeightEnsembling.Samples;
using WeightEnsembling.Tasks;
using WeightEnsembling.Text;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

// QuickStart: eight tasks from different domains (flags by continent, letters, handwritten and blocky digits, arrow
// directions, icon weights and frames, emoji skin tones), a tiny CLIP (both towers) pre-trained on image-caption pairs
// from open icon, emoji, flag and font packages, and eight copies of its image tower fine-tuned one per task: the
// miniature world of docs/results/world/, shipped in assets/world (made by tools/WeightEnsemblingMoE.World). The whole
// data path is in this file: the tokenizer and the text tower build each task's zero-shot head from its class names and
// prompt templates; the image folders are decoded and preprocessed; the pool is merged with the baselines, upcycled into
// WEMoE and E-WEMoE, whose routers are adapted on unlabelled test images; the routers are saved and reloaded; the papers'
// table is printed. `-- grey` runs the earlier grey-image suite instead (GreySuite.cs).
torch.set_num_threads(Environment.ProcessorCount);
MethodRunner.ConfigureConsole();
string assets = Path.Combine(AppContext.BaseDirectory, "assets");
if (args.Contains("grey"))
{
    GreySuite.RunSuite(assets);
    return;
}

torch.manual_seed(0);
string world = Path.Combine(assets, "world");
AnsiConsole.MarkupLine("[bold]WeightEnsemblingMoE[/] QuickStart: merge eight fine-tuned vision transformers into one model.");
string[] taskNames = ["flag-continent", "glyph-letter", "digits", "uci-digits", "arrow-direction", "icon-weight", "icon-frame", "skin-tone"];

// 1. The pre-trained CLIP and its tokenizer; each task's frozen zero-shot head from its class names and templates.
using var clip = ClipModel.FromPretrained(Path.Combine(world, "pretrained"));
var tokenizer = ClipTokenizer.FromPretrained(Path.Combine(world, "pretrained"));
var processor = new ClipImageProcessor { DoResize = true, ShortestEdge = null, ResizeHeight = 32, ResizeWidth = 32, DoCenterCrop = false };
InMemoryTaskDataset Load(string task, string split)
{
    using var files = ImageFolderDataset.Open(Path.Combine(world, "tasks", task, split), processor, name: task);
    using var all = files.Batches(checked((int)files.Count)).Single();
    return new InMemoryTaskDataset(task, all.Images, all.Labels, files.ClassCount);
}

var validation = new List<ClassificationTask>();
var test = new List<ClassificationTask>();
foreach (string name in taskNames)
{
    using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(world, "tasks", name, "task.json")));
    var classNames = json.RootElement.GetProperty("classNames").EnumerateArray().Select(c => c.GetString()!).ToList();
    var templates = json.RootElement.GetProperty("templates").EnumerateArray().Select(c => c.GetString()!).ToList();
    var head = ZeroShotClassificationHead.FromClassNames(clip, tokenizer, classNames, templates);
    validation.Add(new ClassificationTask(name, Load(name, "val"), head));
    test.Add(new ClassificationTask(name, Load(name, "test"), head));
}

// 2. The model pool: θ_0 (the CLIP's image tower) and the eight experts, read from their Hugging Face folders.
using var pretrained = new ClipVisionModel(clip.Config.VisionConfig);
StateDict.LoadInto(pretrained, clip.VisionModel.state_dict());
var experts = taskNames.Select(n => ClipVisionModel.FromPretrained(Path.Combine(world, "experts", n))).ToList();
var pool = ModelPool.FromModels(pretrained, experts, taskNames);
AnsiConsole.MarkupLine($"Loaded a pool of {pool.ExpertCount} experts and {test.Sum(t => t.Data.Count):N0} test images over {test.Count} tasks; heads built from class names.");

const int steps = 120; // about 3 minutes on 2 cores for the whole QuickStart (README)
var runner = new MethodRunner();
var adaptation = new AdaptationOptions { Steps = steps, BatchSize = 16, LearningRate = 1e-4, Seed = 0 };

// 3. Reference points and the baselines: task arithmetic and TIES (λ chosen on validation, as the papers do), and
// layer-wise AdaMerging (coefficients trained by entropy minimisation, then merged into a plain model).
runner.RunBaselines("Pre-trained (zero-shot)", pool, validation, test, adaptation);

// 4. WEMoE and E-WEMoE: upcycle the pool, train only the routers on unlabelled test batches, evaluate per sample. The
// papers' objective (entropy) first, then with the opt-in diversity term (docs/methods/wemoe.md), which keeps the
// routers from collapsing every task onto one class on this world.
string saved = Path.Combine(Path.GetTempPath(), "wemoe-quickstart-routers");
EvaluationReport? diverseReport = null;
long trainable = 0;
runner.Run("WEMoE (2-layer)", steps, report =>
{
    using var upscaled = ModelUpscaler.For(pool).WithRouterDepth(2).WithInitLambda(0.3).WithSeed(0).Build();
    new AdaptationTrainer().Adapt(upscaled, test, adaptation, MethodRunner.PerStep(report));
    return (ModelEvaluator.Evaluate("WEMoE (2-layer)", upscaled, test), $"{steps} steps, lr 1e-4, entropy");
});
runner.Run("WEMoE (2-layer) + diversity", steps, report =>
{
    using var upscaled = ModelUpscaler.For(pool).WithRouterDepth(2).WithInitLambda(0.3).WithSeed(0).Build();
    var options = adaptation.Clone();
    options.Objective = new EntropyObjective { DiversityWeight = 1 };
    new AdaptationTrainer().Adapt(upscaled, test, options, MethodRunner.PerStep(report));
    diverseReport = ModelEvaluator.Evaluate("WEMoE (2-layer) + diversity", upscaled, test);
    trainable = upscaled.CountParameters().Trainable;
    upscaled.SavePretrained(saved);
    return (diverseReport, $"{steps} steps, lr 1e-4, entropy − 1 × entropy of the batch's mean prediction");
});
runner.Run("E-WEMoE (p = 0.9) + diversity", steps, report =>
{
    using var upscaled = ModelUpscaler.For(pool)
        .WithSharedRouter(positionEncoding: true)
        .WithSeed(0)
        .WithTaskVectorStorage(TaskVectorStorageOptions.Sparse(0.9))
        .Build();
    var options = adaptation.Clone();
    options.Objective = new EntropyObjective { DiversityWeight = 1 };
    new AdaptationTrainer().Adapt(upscaled, test, options, MethodRunner.PerStep(report));
    return (ModelEvaluator.Evaluate("E-WEMoE (p = 0.9) + diversity", upscaled, test), $"{steps} steps, lr 1e-4, shared router, 90% of each task vector pruned");
});

// 5. The saved routers rebuild the same model from the pool: what a service would load.
using (var reloaded = UpscaledModel.FromPretrained(saved, pool))
{
    var again = ModelEvaluator.Evaluate("WEMoE (reloaded)", reloaded, test);
    long bytes = Directory.GetFiles(saved).Sum(f => new FileInfo(f).Length);
    AnsiConsole.MarkupLine($"Routers saved to {Markup.Escape(saved)} ({bytes / 1024.0:F0} KB) and reloaded: average {again.AverageAccuracy * 100:F1}% "
        + (Math.Abs(again.AverageAccuracy - diverseReport!.AverageAccuracy) < 1e-12 ? "(identical)." : "[red](differs!)[/]"));
}

// 6. The table and the summary, computed from this run.
runner.PrintTable(taskNames);
AnsiConsole.MarkupLine(
    $"One WEMoE model for all eight tasks: {runner.Average("WEMoE (2-layer) + diversity"):F1}% on average with the diversity term "
    + $"({runner.Average("WEMoE (2-layer)"):F1}% with the papers' entropy alone); task arithmetic {runner.Average("Task arithmetic"):F1}%, "
    + $"eight separate experts {runner.Average("Individual"):F1}%, zero-shot {runner.Average("Pre-trained (zero-shot)"):F1}%.");
AnsiConsole.MarkupLine(
    $"The routers ({trainable:N0} parameters) were trained by test-time adaptation on unlabelled test images only ({steps} steps); "
    + "this world is small, and the papers' premise that MLP routing alone recovers the experts does not hold in it (docs/results/world/).");

foreach (var task in test.Concat(validation))
{
    task.Data.Dispose();
}

foreach (var head in test.Select(t => t.Head).Distinct())
{
    head.Dispose();
}

experts.ForEach(e => e.Dispose());
