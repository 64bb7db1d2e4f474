using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// The CLIP vision transformer (HF <c>CLIPVisionTransformer</c>): <c>embeddings</c>, <c>pre_layrnorm</c> (sic, as in
/// HF), <c>encoder</c> and <c>post_layernorm</c> applied to the class token. Its output has no image embeddings.
/// </summary>
public sealed class ClipVisionTransformer : nn.Module<Tensor, ClipVisionOutput>
{
    private readonly ClipVisionEmbeddings embeddings;
    private readonly LayerNorm pre_layrnorm;
    private readonly ClipEncoder encoder;
    private readonly LayerNorm post_layernorm;

    /// <summary>Creates a vision transformer of the given architecture with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    public ClipVisionTransformer(ClipVisionConfig config) : base(nameof(ClipVisionTransformer))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        embeddings = new ClipVisionEmbeddings(config);
        pre_layrnorm = nn.LayerNorm(config.HiddenSize, eps: config.LayerNormEps);
        encoder = new ClipEncoder(config);
        post_layernorm = nn.LayerNorm(config.HiddenSize, eps: config.LayerNormEps);
        RegisterComponents();
    }

    /// <summary>The architecture.</summary>
    public ClipVisionConfig Config { get; }

    /// <summary>The patch, class and position embeddings.</summary>
    public ClipVisionEmbeddings Embeddings => embeddings;

    /// <summary>The encoder layers.</summary>
    public ClipEncoder Encoder => encoder;

    /// <summary>Runs the tower on a batch of images.</summary>
    /// <param name="input">Pixel values, shape [B, <c>num_channels</c>, <c>image_size</c>, <c>image_size</c>].</param>
    /// <returns>The last hidden state and the pooled output; <see cref="ClipVisionOutput.ImageEmbeds"/> is null.</returns>
    public override ClipVisionOutput forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        using var scope = torch.NewDisposeScope();
        var hidden = pre_layrnorm.forward(embeddings.forward(input));
        var last = encoder.forward(hidden);
        var pooled = post_layernorm.forward(last.select(1, 0));
        return new ClipVisionOutput(last.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope(), null);
    }
}
