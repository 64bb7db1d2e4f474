using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.DependencyInjection;
using WeightEnsembling.Merging;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace DocsSnippets;

/// <summary>The snippets of docs/dependency-injection.md, docs/concepts.md, docs/huggingface-checkpoints.md and docs/gpu.md.</summary>
public static class LibrarySnippets
{
    /// <summary>Registers the services and binds their options from configuration.</summary>
    public static ServiceProvider Register(IConfiguration configuration)
    {
        #region AddWeightEnsemblingMoE
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddWeightEnsemblingMoE(options => options.Upscaler.RouterDepth = 1);
        services.Configure<WeightEnsemblingMoEOptions>(configuration.GetSection(WeightEnsemblingMoEOptions.SectionName));
        var provider = services.BuildServiceProvider();
        var merger = provider.GetRequiredService<IModelMerger>();
        #endregion
        _ = merger;
        return provider;
    }

    /// <summary>Chooses how task vectors are stored.</summary>
    public static UpscaledModel Storages(ClipVisionModel pretrained, ClipVisionModel[] experts)
    {
        #region Storages
        var upscaled = ModelUpscaler.For(pretrained)
            .WithExperts(experts)
            .WithTaskVectorStorage(TaskVectorStorageOptions.LowRank(16))   // or Dense(), Sparse(0.9), LowRankByEnergy(0.95)
            .WithSharedRouter(positionEncoding: true)                       // E-WEMoE: one router for every layer
            .Build();
        #endregion
        return upscaled;
    }

    /// <summary>Loads a Hugging Face CLIP folder and keeps only the vision tower.</summary>
    public static ClipVisionModel FromHuggingFace(string folder)
    {
        #region HuggingFace
        var model = ClipVisionModel.FromPretrained(folder);   // config.json + model.safetensors (or sharded)
        model.eval();
        #endregion
        return model;
    }

    /// <summary>Moves an upscaled model and its inputs to the GPU.</summary>
    public static ClipVisionOutput OnGpu(UpscaledModel upscaled, Tensor pixelValues)
    {
        #region Gpu
        var device = cuda.is_available() ? CUDA : CPU;
        upscaled.Model.to(device);
        using var images = pixelValues.to(device);
        var output = upscaled.Forward(images);
        #endregion
        return output;
    }

    /// <summary>The static merges.</summary>
    public static ClipVisionModel Merges(ClipVisionModel pretrained, ClipVisionModel[] experts)
    {
        #region StaticMerges
        using var average = ModelMerging.SimpleAverage(experts);
        using var arithmetic = ModelMerging.TaskArithmetic(pretrained, experts, scalingFactor: 0.3);
        var ties = ModelMerging.Ties(pretrained, experts, new TiesMergingOptions { TopK = 0.2, ScalingFactor = 0.3 });
        #endregion
        return ties;
    }
}
