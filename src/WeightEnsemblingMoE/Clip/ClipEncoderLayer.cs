using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// One pre-norm transformer block of a CLIP vision or text tower (HF <c>CLIPEncoderLayer</c>):
/// <c>x + self_attn(layer_norm1(x))</c>, then <c>x + mlp(layer_norm2(x))</c>. The attention and the MLP are replaceable
/// slots (<see cref="SelfAttention"/>, <see cref="Mlp"/>): a module put there runs in <c>forward</c> and its parameters
/// appear in the state dict under the same key prefix (<c>self_attn.</c>, <c>mlp.</c>).
/// </summary>
public sealed class ClipEncoderLayer : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> self_attn;
    private readonly LayerNorm layer_norm1;
    private nn.Module<Tensor, Tensor> mlp;
    private readonly LayerNorm layer_norm2;

    /// <summary>Creates an encoder layer of the given architecture with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    public ClipEncoderLayer(ClipVisionConfig config)
        : this(Checked(config).HiddenSize, config.NumAttentionHeads, config.IntermediateSize, config.HiddenAct, config.LayerNormEps)
    {
    }

    /// <summary>Creates an encoder layer of a text tower with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    public ClipEncoderLayer(ClipTextConfig config)
        : this(Checked(config).HiddenSize, config.NumAttentionHeads, config.IntermediateSize, config.HiddenAct, config.LayerNormEps)
    {
    }

    private ClipEncoderLayer(int hiddenSize, int numHeads, int intermediateSize, ClipActivation activation, double layerNormEps)
        : base(nameof(ClipEncoderLayer))
    {
        self_attn = new ClipAttention(hiddenSize, numHeads);
        layer_norm1 = nn.LayerNorm(hiddenSize, eps: layerNormEps);
        mlp = new ClipMlp(hiddenSize, intermediateSize, activation);
        layer_norm2 = nn.LayerNorm(hiddenSize, eps: layerNormEps);
        RegisterComponents();
    }

    /// <summary>
    /// The self-attention slot (state-dict key <c>self_attn</c>); initially a <see cref="ClipAttention"/>. Setting it
    /// registers the new module under <c>self_attn</c> in place of the old one, which is not disposed (the caller owns it).
    /// </summary>
    public nn.Module<Tensor, Tensor> SelfAttention
    {
        get => self_attn;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            self_attn = value;
            Replace(nameof(self_attn), value);
        }
    }

    /// <summary>
    /// The MLP slot (state-dict key <c>mlp</c>); initially a <see cref="ClipMlp"/>. Setting it registers the new module
    /// under <c>mlp</c> in place of the old one, which is not disposed (the caller owns it).
    /// </summary>
    public nn.Module<Tensor, Tensor> Mlp
    {
        get => mlp;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            mlp = value;
            Replace(nameof(mlp), value);
        }
    }

    /// <summary>The layer norm before the attention.</summary>
    public LayerNorm LayerNorm1 => layer_norm1;

    /// <summary>The layer norm before the MLP.</summary>
    public LayerNorm LayerNorm2 => layer_norm2;

    /// <summary>Applies the block.</summary>
    /// <param name="input">Tokens, shape [B, N, D].</param>
    /// <returns>Shape [B, N, D].</returns>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        using var scope = torch.NewDisposeScope();
        var hidden = input + self_attn.forward(layer_norm1.forward(input));
        var result = hidden + mlp.forward(layer_norm2.forward(hidden));
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Applies the block with an additive attention mask (the text tower's causal and padding mask).</summary>
    /// <param name="input">Tokens, shape [B, N, D].</param>
    /// <param name="attentionMask">
    /// An additive mask broadcastable to the attention scores [B, heads, N, N], or null (then this is
    /// <see cref="forward(Tensor)"/>).
    /// </param>
    /// <returns>Shape [B, N, D].</returns>
    /// <exception cref="NotSupportedException">A mask is given but the attention slot holds a module other than <see cref="ClipAttention"/>.</exception>
    public Tensor forward(Tensor input, Tensor? attentionMask)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (attentionMask is null)
        {
            return forward(input);
        }

        if (self_attn is not ClipAttention attention)
        {
            throw new NotSupportedException(
                $"The self_attn slot holds a {self_attn.GetType().Name}, which takes no attention mask; only ClipAttention supports masked attention.");
        }

        using var scope = torch.NewDisposeScope();
        var hidden = input + attention.forward(layer_norm1.forward(input), attentionMask);
        var result = hidden + mlp.forward(layer_norm2.forward(hidden));
        return result.MoveToOuterDisposeScope();
    }

    private static T Checked<T>(T config)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(config);
        switch (config)
        {
            case ClipVisionConfig vision:
                vision.Validate();
                break;
            case ClipTextConfig text:
                text.Validate();
                break;
        }

        return config;
    }

    private void Replace(string name, nn.Module module)
    {
        // TorchSharp's register_module refuses a name that is already registered; unregister the old module first.
        register_module(name, null!);
        register_module(name, module);
    }
}
