using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Upscaling;

/// <summary>Tiny CLIP vision models: a random "pre-trained" one and experts that differ from it by random task vectors.</summary>
internal static class TinyClip
{
    public static readonly ClipVisionConfig Config = new()
    {
        HiddenSize = 16,
        IntermediateSize = 32,
        NumHiddenLayers = 2,
        NumAttentionHeads = 2,
        ImageSize = 8,
        PatchSize = 4,
        NumChannels = 3,
        ProjectionDim = 8,
    };

    public static ClipVisionModel Pretrained(int seed = 1, ClipVisionConfig? config = null)
    {
        torch.manual_seed(seed);
        var model = new ClipVisionModel(config ?? Config);
        model.eval();
        return model;
    }

    /// <summary>θ_0 plus Gaussian noise of the given scale on every tensor.</summary>
    public static ClipVisionModel Expert(ClipVisionModel pretrained, int seed, double scale = 0.05)
    {
        var expert = new ClipVisionModel(pretrained.Config, pretrained.HasProjection);
        expert.eval();
        using var generator = new Generator((ulong)seed);
        using var noGrad = no_grad();
        var source = pretrained.state_dict();
        foreach (var (name, target) in expert.state_dict())
        {
            target.copy_(source[name] + randn(target.shape, generator: generator) * scale);
        }

        return expert;
    }

    public static Tensor Images(int batch, int seed)
    {
        using var generator = new Generator((ulong)seed);
        return randn(new long[] { batch, 3, 8, 8 }, generator: generator);
    }

    /// <summary>A plain model holding the given state dict.</summary>
    public static ClipVisionModel WithWeights(IReadOnlyDictionary<string, Tensor> weights, bool withProjection = true)
    {
        var model = new ClipVisionModel(Config, withProjection);
        model.eval();
        StateDict.LoadInto(model, weights, strict: true);
        return model;
    }

    /// <summary>Same shape and every element equal (TorchSharp's <c>Tensor.equal</c> is element-wise, unlike <c>torch.equal</c>).</summary>
    public static bool BitEqual(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public static double MaxDifference(Tensor a, Tensor b) => (a - b).abs().max().item<float>();
}
