using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks;

/// <summary>Random ViT-B/32 models (the <see cref="ClipVisionConfig"/> defaults) for the whole-model benchmarks.</summary>
internal static class VitB32
{
    public const int Experts = 8;

    /// <summary>A dense random ViT-B/32 (seed 100): the baseline (same cost as any merged ViT-B/32).</summary>
    public static ClipVisionModel Dense()
    {
        torch.manual_seed(100);
        return new ClipVisionModel(new ClipVisionConfig());
    }

    private static UpscaledModel? shared;

    /// <summary>One <see cref="Upscaled"/> model per process, shared by the benchmarks (building it takes a while); never disposed.</summary>
    public static UpscaledModel SharedUpscaled() => shared ??= Upscaled();

    /// <summary>θ_0 (seed 0) upcycled with <see cref="Experts"/> experts θ_0 + 1e-3·noise, every MLP upscaled, dense task vectors.</summary>
    public static UpscaledModel Upscaled()
    {
        torch.manual_seed(0);
        var pretrained = new ClipVisionModel(new ClipVisionConfig());
        var source = pretrained.state_dict();
        var experts = new List<ClipVisionModel>();
        for (int t = 0; t < Experts; t++)
        {
            var expert = new ClipVisionModel(new ClipVisionConfig());
            using (no_grad())
            {
                foreach (var (name, tensor) in expert.state_dict())
                {
                    using var scope = NewDisposeScope();
                    tensor.copy_(source[name] + (randn(tensor.shape) * 1e-3));
                }
            }

            experts.Add(expert);
        }

        var upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).Build();
        experts.ForEach(e => e.Dispose());
        return upscaled;
    }
}
