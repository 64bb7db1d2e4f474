using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>The stack of encoder layers of a CLIP vision tower (HF <c>CLIPEncoder</c>; state-dict key <c>layers.{i}</c>).</summary>
public sealed class ClipEncoder : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Field names mirror the HF state-dict keys.
    private readonly ModuleList<ClipEncoderLayer> layers;
#pragma warning restore IDE1006

    /// <summary>Creates <c>num_hidden_layers</c> encoder layers with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    public ClipEncoder(ClipVisionConfig config) : base(nameof(ClipEncoder))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        layers = new ModuleList<ClipEncoderLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            layers.Add(new ClipEncoderLayer(config));
        }

        RegisterComponents();
    }

    /// <summary>The encoder layers, in order.</summary>
    public IReadOnlyList<ClipEncoderLayer> Layers => new System.Collections.ObjectModel.ReadOnlyCollection<ClipEncoderLayer>(layers);

    /// <summary>Applies every layer in turn.</summary>
    /// <param name="input">Tokens, shape [B, N, D].</param>
    /// <returns>Shape [B, N, D].</returns>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        using var scope = torch.NewDisposeScope();
        var hidden = layers[0].forward(input);
        for (int i = 1; i < layers.Count; i++)
        {
            hidden = layers[i].forward(hidden);
        }

        return hidden.MoveToOuterDisposeScope();
    }
}
