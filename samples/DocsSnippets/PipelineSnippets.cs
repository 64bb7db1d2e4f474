#region PipelineUsings
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
#endregion

namespace DocsSnippets;

/// <summary>The pipeline snippets of docs/huggingface-checkpoints.md and docs/gpu.md (the steps samples/EndToEnd runs).</summary>
public static class PipelineSnippets
{
    /// <summary>
    /// FusionBench's WEMoE experiment on real files: openai/clip-vit-base-patch32, the tanganke/clip-vit-base-patch32_&lt;task&gt;
    /// experts and the tanganke/&lt;task&gt; parquet test splits, each folder downloaded beforehand.
    /// </summary>
    /// <param name="clipFolder">The openai/clip-vit-base-patch32 folder (full CLIPModel with tokenizer files).</param>
    /// <param name="expertsRoot">A folder with one sub-folder per task holding its expert.</param>
    /// <param name="dataRoot">A folder with one sub-folder per task holding its test parquet files.</param>
    /// <param name="taskNames">The tasks, e.g. sun397, stanford-cars, ...; their class names come from <see cref="ClipTaskPrompts"/>.</param>
    /// <returns>The evaluation report after adaptation.</returns>
    public static EvaluationReport HuggingFacePipeline(string clipFolder, string expertsRoot, string dataRoot, string[] taskNames)
    {
        #region HuggingFacePipeline
        using var clip = ClipModel.FromPretrained(clipFolder);
        var tokenizer = ClipTokenizer.FromPretrained(clipFolder);
        var processor = ClipImageProcessor.FromPretrained(clipFolder);   // preprocessor_config.json
        var tasks = new List<ClassificationTask>();
        foreach (string task in taskNames)
        {
            var prompts = ClipTaskPrompts.Get(task);                       // FusionBench's class names and templates
            var files = Directory.GetFiles(Path.Combine(dataRoot, task), "test-*.parquet");
            var data = ParquetImageDataset.Open(files, processor, name: task);   // columns "image" {bytes, path}, "label"
            var head = ZeroShotClassificationHead.FromClassNames(clip, tokenizer, prompts.ClassNames, prompts.Templates);
            tasks.Add(new ClassificationTask(task, data, head));
        }

        var zeroShot = ModelEvaluator.Evaluate("zero-shot", clip.VisionModel, tasks);
        var pool = ModelPool.FromFolders(clipFolder, taskNames.Select(t => Path.Combine(expertsRoot, t)), taskNames);
        using var upscaled = ModelUpscaler.For(pool).WithInitLambda(0.3).Build();
        new AdaptationTrainer().Adapt(upscaled, tasks,
            new AdaptationOptions { Steps = 1000, BatchSize = 16, LearningRate = 1e-4 });
        var report = ModelEvaluator.Evaluate("WEMoE", upscaled, tasks);
        #endregion
        _ = zeroShot;
        return report;
    }

    /// <summary>Upcycles, adapts and evaluates on CUDA when it is there (on the CPU otherwise).</summary>
    /// <param name="pool">θ_0 and the experts.</param>
    /// <param name="tasks">The tasks: their data yield CPU batches, their heads may be on any device.</param>
    /// <returns>The evaluation report.</returns>
    public static EvaluationReport OnCuda(ModelPool pool, IReadOnlyList<ClassificationTask> tasks)
    {
        #region GpuPipeline
        var device = cuda.is_available() ? CUDA : CPU;
        using var upscaled = ModelUpscaler.For(pool).Build();   // upcycled on the CPU, tensor by tensor
        upscaled.Model.to(device);                              // move first: Module.to replaces the parameters
        var adaptable = upscaled;   // made after the move, as the optimizer is
        new AdaptationTrainer().Adapt(adaptable, tasks, new AdaptationOptions { Steps = 1000 });
        var report = ModelEvaluator.Evaluate("WEMoE", upscaled, tasks);   // heads, batches and labels go to the model's device
        #endregion
        return report;
    }
}
