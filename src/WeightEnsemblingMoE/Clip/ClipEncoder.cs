using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>The stack of encoder layers of a CLIP vision or text tower (HF <c>CLIPEncoder</c>; state-dict key <c>layers.{i}</c>).</summary>
public sealed class ClipEncoder : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ClipEncoderLayer> layers;

    /// <summary>Creates <c>num_hidden_layers</c> encoder layers with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    public ClipEncoder(ClipVisionConfig config) : this(CreateLayers(config, c => c.Validate().NumHiddenLayers, c => new ClipEncoderLayer(c)))
    {
    }

    /// <summary>Creates the <c>num_hidden_layers</c> encoder layers of a text tower with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    public ClipEncoder(ClipTextConfig config) : this(CreateLayers(config, c => c.Validate().NumHiddenLayers, c => new ClipEncoderLayer(c)))
    {
    }

    private ClipEncoder(ModuleList<ClipEncoderLayer> layers) : base(nameof(ClipEncoder))
    {
        this.layers = layers;
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

    /// <summary>Applies every layer in turn with an additive attention mask (see <see cref="ClipEncoderLayer.forward(Tensor, Tensor?)"/>).</summary>
    /// <param name="input">Tokens, shape [B, N, D].</param>
    /// <param name="attentionMask">An additive mask broadcastable to [B, heads, N, N], or null for none.</param>
    /// <returns>Shape [B, N, D].</returns>
    public Tensor forward(Tensor input, Tensor? attentionMask)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (attentionMask is null)
        {
            return forward(input);
        }

        using var scope = torch.NewDisposeScope();
        var hidden = layers[0].forward(input, attentionMask);
        for (int i = 1; i < layers.Count; i++)
        {
            hidden = layers[i].forward(hidden, attentionMask);
        }

        return hidden.MoveToOuterDisposeScope();
    }

    private static ModuleList<ClipEncoderLayer> CreateLayers<T>(T config, Func<T, int> count, Func<T, ClipEncoderLayer> create)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(config);
        int n = count(config);
        var result = new ModuleList<ClipEncoderLayer>();
        for (int i = 0; i < n; i++)
        {
            result.Add(create(config));
        }

        return result;
    }
}
