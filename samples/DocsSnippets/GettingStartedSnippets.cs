using WeightEnsembling.Evaluation;
using WeightEnsembling.Moe;
using WeightEnsembling.Models;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace DocsSnippets;

/// <summary>The snippets of docs/getting-started.md.</summary>
public static class GettingStartedSnippets
{
    /// <summary>Upcycles a pre-trained model and its experts from Hugging Face folders and runs the result.</summary>
    public static UpscaledModel FirstUpcycle(string pretrainedFolder, string[] expertFolders, Tensor pixelValues)
    {
        #region FirstUpcycle
        var pool = ModelPool.FromFolders(pretrainedFolder, expertFolders);
        var upscaled = Upscaler.Upcycle(pool);
        upscaled.RoutingMode = RoutingMode.PerSample;
        using var output = upscaled.Forward(pixelValues);
        Console.WriteLine($"{upscaled.Modules.Count} MoE modules, embeddings [{string.Join(", ", output.ImageEmbeds!.shape)}]");
        #endregion
        return upscaled;
    }

    /// <summary>Trains the routers by entropy minimisation on unlabelled test data.</summary>
    public static AdaptationResult Adapt(UpscaledModel upscaled, IReadOnlyList<ClassificationTask> tasks, string checkpointFolder)
    {
        #region TestTimeAdaptation
        var options = new AdaptationOptions
        {
            Steps = 1000,
            LearningRate = 1e-4,
            BatchSize = 16,
            CheckpointFolder = checkpointFolder,
            CheckpointInterval = 100,
        };
        var progress = new Progress<AdaptationProgress>(p => Console.WriteLine($"step {p.Step}/{p.TotalSteps}"));
        var result = new AdaptationTrainer().Adapt(upscaled, tasks, options, progress);
        #endregion
        return result;
    }

    /// <summary>Measures each task's accuracy.</summary>
    public static EvaluationReport Evaluate(UpscaledModel upscaled, IReadOnlyList<ClassificationTask> tasks)
    {
        #region Evaluate
        var report = ModelEvaluator.Evaluate("WEMoE", upscaled, tasks, batchSize: 64);
        Console.WriteLine(report.ToMarkdown());
        #endregion
        return report;
    }

    /// <summary>Upcycles with every option of the fluent builder spelled out.</summary>
    public static UpscaledModel Builder(ModelPool pool)
    {
        #region UpscalerBuilder
        var upscaled = ModelUpscaler.For(pool)
            .WithRouterDepth(2)
            .WithInitLambda(0.3)
            .WithTaskVectorStorage(TaskVectorStorageOptions.Dense())
            .Build();
        #endregion
        return upscaled;
    }

    /// <summary>Saves the trained routers with their configuration and rebuilds the model from the pool.</summary>
    public static UpscaledModel SaveAndReload(UpscaledModel upscaled, ModelPool pool, string folder)
    {
        #region SaveRouters
        upscaled.SavePretrained(folder);
        var rebuilt = UpscaledModel.FromPretrained(folder, pool);
        #endregion
        return rebuilt;
    }
}
