using Microsoft.Extensions.DependencyInjection;
using WeightEnsembling.Clip;
using WeightEnsembling.Moe;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

// Proof that the WeightEnsemblingMoE package works from another application: save a tiny random CLIP vision model and
// two "fine-tuned" experts as Hugging Face folders, upcycle them through the DI-registered factory, and run the result.
// On Debian 12 / Ubuntu 22.04 libtorch only loads because the package's build target patched this app's output.
manual_seed(0);
var config = new ClipVisionConfig
{
    HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 2,
    ImageSize = 16, PatchSize = 8, NumChannels = 3, ProjectionDim = 16,
};
string root = Directory.CreateTempSubdirectory("wemoe-consumer").FullName;
try
{
    using (var pretrained = new ClipVisionModel(config))
    {
        pretrained.SaveTo(Path.Combine(root, "pretrained"));
        for (int t = 0; t < 2; t++)
        {
            using var expert = new ClipVisionModel(config);
            using (no_grad())
            {
                var source = pretrained.state_dict();
                foreach (var (name, tensor) in expert.state_dict())
                {
                    tensor.copy_(source[name] + (randn(tensor.shape) * 0.02));
                }
            }

            expert.SaveTo(Path.Combine(root, $"expert{t}"));
        }
    }

    using var services = new ServiceCollection()
        .AddWeightEnsemblingMoE(options => options.Upscaler.RouterDepth = 2)
        .BuildServiceProvider();
    using var upscaled = services.GetRequiredService<IModelUpscalerFactory>()
        .ForFolder(Path.Combine(root, "pretrained"))
        .WithExpertFolders(Path.Combine(root, "expert0"), Path.Combine(root, "expert1"))
        .Build();
    upscaled.RoutingMode = RoutingMode.PerSample;
    using var images = randn(3, 3, 16, 16);
    using var output = upscaled.Forward(images);
    var embeds = output.ImageEmbeds ?? throw new InvalidOperationException("The model has no projection.");
    if (!embeds.isfinite().all().item<bool>())
    {
        throw new InvalidOperationException("The upscaled model produced NaN or Inf.");
    }

    Console.WriteLine($"PackageConsumer: upscaled {upscaled.Modules.Count} MLPs over {upscaled.TaskCount} experts; image embeddings [{string.Join(", ", embeds.shape)}].");
}
finally
{
    Directory.Delete(root, recursive: true);
}
