using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// The input embeddings of a CLIP vision tower (HF <c>CLIPVisionEmbeddings</c>): non-overlapping patches projected by
/// <c>patch_embedding</c> (a bias-free convolution), a learned <c>class_embedding</c> token prepended, and learned
/// <c>position_embedding</c> rows added. Maps pixels [B, C, H, W] to tokens [B, 1 + (H/P)², D].
/// </summary>
public sealed class ClipVisionEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Parameter class_embedding;
    private readonly Conv2d patch_embedding;
    private readonly Embedding position_embedding;

    /// <summary>Creates the embeddings of the given architecture with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    public ClipVisionEmbeddings(ClipVisionConfig config) : base(nameof(ClipVisionEmbeddings))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        // A model may be built inside a caller's dispose scope: its parameters must not die with it.
        (class_embedding, patch_embedding, position_embedding) = DisposeScopes.Escaping(() => (
            nn.Parameter(torch.randn(config.HiddenSize)),
            nn.Conv2d(config.NumChannels, config.HiddenSize, kernel_size: config.PatchSize, stride: config.PatchSize, bias: false),
            nn.Embedding(config.NumPositions, config.HiddenSize)));
        RegisterComponents();
    }

    /// <summary>The architecture.</summary>
    public ClipVisionConfig Config { get; }

    /// <summary>Embeds a batch of images.</summary>
    /// <param name="input">Pixel values, shape [B, <c>num_channels</c>, <c>image_size</c>, <c>image_size</c>].</param>
    /// <returns>The token embeddings, shape [B, <see cref="ClipVisionConfig.NumPositions"/>, <c>hidden_size</c>].</returns>
    /// <exception cref="ArgumentException">The input does not have the expected shape.</exception>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var c = Config;
        if (input.dim() != 4 || input.shape[1] != c.NumChannels || input.shape[2] != c.ImageSize || input.shape[3] != c.ImageSize)
        {
            throw new ArgumentException(
                $"pixel_values must have shape [B, {c.NumChannels}, {c.ImageSize}, {c.ImageSize}], got [{string.Join(", ", input.shape)}].",
                nameof(input));
        }

        using var scope = torch.NewDisposeScope();
        long batch = input.shape[0];
        var weight = patch_embedding.weight!;
        var patches = patch_embedding.forward(input.to(weight.dtype, weight.device)); // [B, D, g, g]
        patches = patches.flatten(2).transpose(1, 2); // [B, g², D]
        var classToken = class_embedding.reshape(1, 1, c.HiddenSize).expand(batch, 1, c.HiddenSize);
        var tokens = torch.cat([classToken, patches], 1);
        var result = tokens + position_embedding.weight!.unsqueeze(0);
        return result.MoveToOuterDisposeScope();
    }
}
