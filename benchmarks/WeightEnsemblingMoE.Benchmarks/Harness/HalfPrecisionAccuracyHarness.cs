using System.Globalization;
using TorchSharp;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Models;
using WeightEnsembling.Moe;
using WeightEnsembling.Tasks;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// Half-precision task vectors (issue 19, item 4): the QuickStart's real-data zoo (six tasks, samples/QuickStart/assets)
/// upscaled into WEMoE (2-layer routers, λ = 0.3, seed 0, dense storage) with the task vectors stored in float32,
/// float16 and bfloat16, evaluated per sample on the six test sets; the routers untrained (as upscaled) and, with
/// <c>--adapt N</c>, after N steps of the QuickStart's test-time adaptation (batch 16, lr 1e-4, seed 0). Prints per-task
/// and average accuracy and the bytes of the task-vector storages. Accuracies do not depend on the machine's load, so
/// this is a harness, not a timed benchmark; no timings are printed.
/// </summary>
internal static class HalfPrecisionAccuracyHarness
{
    public static int Run(string[] args)
    {
        int adaptSteps = 0;
        int at = Array.IndexOf(args, "--adapt");
        if (at >= 0)
        {
            adaptSteps = at + 1 < args.Length && int.TryParse(args[at + 1], NumberStyles.None, CultureInfo.InvariantCulture, out int steps) && steps > 0
                ? steps
                : throw new ArgumentException("--adapt needs a positive number of steps.", nameof(args));
        }

        string assets = args.Where((a, i) => !a.StartsWith("--", StringComparison.Ordinal) && (at < 0 || i != at + 1))
            .FirstOrDefault() ?? FindAssets();

        torch.set_num_threads(Environment.ProcessorCount);
        (string Name, string Dataset, string Shift)[] definitions =
        [
            ("fashion", "fashion", "none"), ("mnist", "mnist", "none"), ("uci-digits", "uci", "none"),
            ("fashion-inverted", "fashion", "invert"), ("mnist-rot90", "mnist", "rot90"), ("uci-digits-inverted", "uci", "invert"),
        ];
        var test = definitions
            .Select(d => new ClassificationTask(d.Name, Load(assets, d.Dataset, d.Shift, d.Name), TaskHead.Load(Path.Combine(assets, "zoo", "heads", $"{d.Name}.safetensors"))))
            .ToList();
        var pool = ModelPool.FromFolders(
            Path.Combine(assets, "zoo", "pretrained"),
            definitions.Select(d => Path.Combine(assets, "zoo", d.Name)),
            definitions.Select(d => d.Name));

        Console.WriteLine($"assets: {assets}; WEMoE 2-layer routers, λ = 0.3, seed 0, dense storage; adaptation steps: {adaptSteps}");
        Console.WriteLine($"{"dtype",-9} {"tv bytes",10} " + string.Join(" ", test.Select(t => $"{t.Name,20}")) + $" {"average",8}");
        EvaluationReport? reference = null;
        Tensor? referenceFeatures = null;
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float16, ScalarType.BFloat16 })
        {
            torch.manual_seed(0);
            using var upscaled = ModelUpscaler.For(pool).WithRouterDepth(2).WithInitLambda(0.3).WithSeed(0).WithTaskVectorDType(dtype).Build();
            if (adaptSteps > 0)
            {
                new AdaptationTrainer().Adapt(upscaled, test, new AdaptationOptions { Steps = adaptSteps, BatchSize = 16, LearningRate = 1e-4, Seed = 0 });
            }

            var report = ModelEvaluator.Evaluate(dtype.ToString(), upscaled, test);
            long bytes = upscaled.Model.modules().OfType<TaskVectorStorage>().Sum(s => s.Bytes);
            Console.WriteLine(
                $"{dtype,-9} {bytes,10} " + string.Join(" ", report.Scores.Select(s => $"{s.Accuracy * 100,19:F2}%")) + $" {report.AverageAccuracy * 100,7:F2}%");
            var features = Features(upscaled, test);
            reference ??= report;
            referenceFeatures ??= features;
            if (!ReferenceEquals(reference, report))
            {
                using var difference = (features - referenceFeatures).abs();
                using var scale = referenceFeatures.abs().max();
                Console.WriteLine(
                    $"{"",-9} image features of the first 64 test images per task: max |Δ| vs float32 {difference.max().item<float>():E2} "
                    + $"(features' max |value| {scale.item<float>():F2}), mean |Δ| {difference.mean().item<float>():E2}");
                Console.WriteLine(
                    $"{"",-9} {"Δ vs f32",10} " + string.Join(" ", report.Scores.Zip(reference.Scores, (s, r) => $"{(s.Accuracy - r.Accuracy) * 100,18:+0.00;-0.00;0.00}pp"))
                    + $" {(report.AverageAccuracy - reference.AverageAccuracy) * 100,6:+0.00;-0.00;0.00}pp");
            }
        }

        referenceFeatures?.Dispose();
        foreach (var task in test)
        {
            task.Data.Dispose();
            task.Head.Dispose();
        }

        return 0;
    }

    /// <summary>The per-sample image features of the first 64 test images of every task, [6·64, d].</summary>
    private static Tensor Features(UpscaledModel model, IReadOnlyList<ClassificationTask> tasks)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        model.Model.eval();
        model.RoutingMode = RoutingMode.PerSample;
        var parts = tasks.Select(t =>
        {
            var batch = t.Data.GetBatch(Enumerable.Range(0, 64).Select(i => (long)i).ToArray());
            return model.Model.GetImageFeatures(batch.Images);
        }).ToArray();
        return cat(parts, 0).MoveToOuterDisposeScope();
    }

    private static InMemoryTaskDataset Load(string assets, string dataset, string shift, string name)
    {
        using var scope = NewDisposeScope();
        using var raw = IdxReader.Read(Path.Combine(assets, "data", $"{dataset}-test-images.idx.gz"));
        using var labels = IdxReader.Read(Path.Combine(assets, "data", $"{dataset}-test-labels.idx.gz"));
        var images = raw.to(ScalarType.Float32).unsqueeze(1) / 255f;
        images = shift switch
        {
            "invert" => 1f - images,
            "rot90" => images.rot90(1, (2, 3)),
            _ => images,
        };
        return new InMemoryTaskDataset(name, (images - 0.5f) / 0.5f, labels.to(ScalarType.Int64), classCount: 10);
    }

    private static string FindAssets()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "samples", "QuickStart", "assets");
            if (Directory.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new DirectoryNotFoundException("samples/QuickStart/assets not found above the harness's folder; pass the assets folder as the first argument.");
    }
}
