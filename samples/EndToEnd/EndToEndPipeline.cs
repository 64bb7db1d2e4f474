using System.Globalization;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Data;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Images;
using WeightEnsembling.Models;
using WeightEnsembling.Tasks;
using WeightEnsembling.Text;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace EndToEnd;

/// <summary>
/// The whole pipeline on real files, as a user with Hugging Face checkpoints runs it (docs/huggingface-checkpoints.md
/// does the same on openai/clip-vit-base-patch32 and FusionBench's experts): load the CLIP folder, its tokenizer and its
/// preprocessing; open an image folder and a parquet file; build each task's zero-shot head from its class names; measure
/// zero-shot accuracy; upcycle the fine-tuned experts into a WEMoE model; adapt its routers on the unlabelled test
/// images; evaluate.
/// </summary>
public static class EndToEndPipeline
{
    /// <summary>The default number of test-time adaptation steps.</summary>
    public const int DefaultSteps = 40;

    /// <summary>The prompt templates of both tasks (FusionBench keeps one list per task; ours share this one).</summary>
    public static readonly string[] Templates = ["a photo of a {}.", "a drawing of a {}."];

    /// <summary>Runs the pipeline on <paramref name="assets"/> and reports each stage on <paramref name="log"/>.</summary>
    /// <param name="assets">The folder made by tools/fixtures/end_to_end_sample.py.</param>
    /// <param name="log">Receives one line per stage.</param>
    /// <param name="steps">Test-time adaptation steps.</param>
    /// <returns>The evaluation reports, in the order run.</returns>
    public static EndToEndResult Run(string assets, TextWriter log, int steps = DefaultSteps)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(assets);
        ArgumentNullException.ThrowIfNull(log);
        torch.manual_seed(0);
        string clipFolder = Path.Combine(assets, "clip");

        // 1. The full CLIP folder: both towers, the tokenizer files and preprocessor_config.json.
        using var clip = ClipModel.FromPretrained(clipFolder);
        var tokenizer = ClipTokenizer.FromPretrained(clipFolder);
        var processor = ClipImageProcessor.FromPretrained(clipFolder);
        log.WriteLine($"Loaded CLIP from {clipFolder}: vision {clip.Config.VisionConfig.HiddenSize} wide, text vocabulary {clip.Config.TextConfig.VocabSize}.");

        // 2. The tasks' data: an image folder (one sub-folder per class) and a Hugging Face parquet file.
        var loader = new DataLoaderOptions { LoaderThreads = 1, PrefetchBatches = 2 };
        using var shapes = ImageFolderDataset.Open(Path.Combine(assets, "shapes"), processor, loader, name: "shapes");
        using var digits = ParquetImageDataset.Open([Path.Combine(assets, "digits.parquet")], processor, options: loader, name: "digits");
        (TaskDataset Data, IReadOnlyList<string> ClassNames)[] data = [(shapes, shapes.Classes), (digits, ["zero", "one", "two"])];

        // 3. Zero-shot heads from class names × templates through the text tower (FusionBench's construction).
        var tasks = new List<ClassificationTask>();
        foreach (var (dataset, classNames) in data)
        {
            var head = ZeroShotClassificationHead.FromClassNames(clip, tokenizer, classNames, Templates);
            tasks.Add(new ClassificationTask(dataset.Name, dataset, head));
        }

        var reports = new List<EvaluationReport>();
        try
        {
            reports.Add(Report(log, ModelEvaluator.Evaluate("Zero-shot (pre-trained CLIP)", clip.VisionModel, tasks, batchSize: 16)));

            // 4. The experts, one per task, read lazily from their folders with θ_0 from the CLIP folder.
            var pool = ModelPool.FromFolders(clipFolder, data.Select(d => Path.Combine(assets, "experts", d.Data.Name)), data.Select(d => d.Data.Name));
            var individual = new List<TaskScore>();
            for (int t = 0; t < tasks.Count; t++)
            {
                using var expert = pool.LoadExpertModel(t);
                individual.Add(ModelEvaluator.Evaluate("Individual", expert, [tasks[t]], batchSize: 16).Scores[0]);
            }

            reports.Add(Report(log, new EvaluationReport("Individual (each expert on its task)", individual)));

            // 5. Upcycle: task arithmetic everywhere but the MLPs, which become weight-ensembling MoE modules.
            using var upscaled = ModelUpscaler.For(pool).WithInitLambda(0.3).WithSeed(0).Build();
            reports.Add(Report(log, ModelEvaluator.Evaluate("WEMoE before adaptation", upscaled, tasks, batchSize: 16)));

            // 6. Adapt the routers on the unlabelled test images (entropy minimisation), then evaluate.
            Adapt(upscaled, tasks, steps);
            reports.Add(Report(log, ModelEvaluator.Evaluate($"WEMoE after {steps} steps", upscaled, tasks, batchSize: 16)));
        }
        finally
        {
            foreach (var task in tasks)
            {
                task.Head.Dispose();
            }
        }

        return new EndToEndResult(reports, shapes.SkippedCount + digits.SkippedCount);
    }

    /// <summary>
    /// Test-time adaptation, in one place so that a change of the trainer's API touches one call: the current
    /// <see cref="AdaptationTrainer"/> on the upscaled model's routers.
    /// </summary>
    private static void Adapt(UpscaledModel model, IReadOnlyList<ClassificationTask> tasks, int steps) =>
        new AdaptationTrainer().Adapt(
            model,
            tasks,
            new AdaptationOptions { Steps = steps, BatchSize = 8, LearningRate = 1e-4, Seed = 0 });

    private static EvaluationReport Report(TextWriter log, EvaluationReport report)
    {
        log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{report.Method}: average {report.AverageAccuracy * 100:F1}%"));
        return report;
    }
}
