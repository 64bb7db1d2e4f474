using TorchSharp;
using WeightEnsembling.Clip;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// Runs a CLIP vision model on weights given by state-dict key, so that merged weights that carry gradients (e.g. to
/// AdaMerging's coefficients) can be used: TorchSharp has no <c>functional_call</c>, and a module's parameter slots
/// only take leaf tensors. Attention and MLP blocks run through <see cref="Moe.IMergeableModule.Forward"/> with the
/// given weights (one block of each kind serves as the shape template; its own weights are never read); embeddings and
/// layer norms are functional ops written to match <see cref="ClipVisionModel"/>.
/// </summary>
internal sealed class FunctionalClip : IDisposable
{
    private readonly ClipAttention attention;
    private readonly ClipMlp mlp;

    public FunctionalClip(ClipVisionConfig config, bool withProjection)
    {
        Config = config.Validate();
        HasProjection = withProjection;
        attention = new ClipAttention(config.HiddenSize, config.NumAttentionHeads);
        mlp = new ClipMlp(config.HiddenSize, config.IntermediateSize, config.HiddenAct);
    }

    public ClipVisionConfig Config { get; }

    public bool HasProjection { get; }

    /// <summary>The image features (projected when the model has a projection, else the pooled output), as <see cref="ClipVisionModel.GetImageFeatures"/>.</summary>
    public Tensor Features(Func<string, Tensor> weight, Tensor pixelValues)
    {
        var c = Config;
        if (pixelValues.dim() != 4 || pixelValues.shape[1] != c.NumChannels || pixelValues.shape[2] != c.ImageSize || pixelValues.shape[3] != c.ImageSize)
        {
            throw new ArgumentException(
                $"pixel_values must have shape [B, {c.NumChannels}, {c.ImageSize}, {c.ImageSize}], got [{string.Join(", ", pixelValues.shape)}].",
                nameof(pixelValues));
        }

        using var scope = NewDisposeScope();
        long batch = pixelValues.shape[0];
        var patchWeight = weight("vision_model.embeddings.patch_embedding.weight");
        var patches = nn.functional.conv2d(pixelValues.to(patchWeight.dtype, patchWeight.device), patchWeight, strides: [c.PatchSize, c.PatchSize]);
        patches = patches.flatten(2).transpose(1, 2);
        var classToken = weight("vision_model.embeddings.class_embedding").reshape(1, 1, c.HiddenSize).expand(batch, 1, c.HiddenSize);
        var hidden = cat([classToken, patches], 1) + weight("vision_model.embeddings.position_embedding.weight").unsqueeze(0);
        hidden = LayerNorm(weight, "vision_model.pre_layrnorm", hidden);
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string prefix = $"vision_model.encoder.layers.{i}.";
            hidden = hidden + attention.Forward(LayerNorm(weight, prefix + "layer_norm1", hidden), Linear(weight, prefix + "self_attn."));
            hidden = hidden + mlp.Forward(LayerNorm(weight, prefix + "layer_norm2", hidden), Linear(weight, prefix + "mlp."));
        }

        var pooled = LayerNorm(weight, "vision_model.post_layernorm", hidden.select(1, 0));
        var features = HasProjection ? nn.functional.linear(pooled, weight("visual_projection.weight")) : pooled;
        return features.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        attention.Dispose();
        mlp.Dispose();
    }

    private static Moe.LinearLayerFunction Linear(Func<string, Tensor> weight, string prefix) =>
        (name, input) => nn.functional.linear(input, weight($"{prefix}{name}.weight"), weight($"{prefix}{name}.bias"));

    private Tensor LayerNorm(Func<string, Tensor> weight, string prefix, Tensor input) =>
        nn.functional.layer_norm(input, [Config.HiddenSize], weight(prefix + ".weight"), weight(prefix + ".bias"), Config.LayerNormEps);
}
