using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// The CLIP text transformer (HF <c>CLIPTextTransformer</c>): <c>embeddings</c>, <c>encoder</c> run with a causal
/// attention mask (plus an optional padding mask), and <c>final_layer_norm</c>. The pooled output is the final hidden
/// state at the end-of-text token, chosen exactly as transformers does: when <c>eos_token_id</c> is 2 (the legacy
/// configs), the position of the largest token id (<c>argmax(input_ids)</c>, first one on ties); otherwise the first
/// position equal to <c>eos_token_id</c> (position 0 if there is none). Its output has no text embeddings.
/// </summary>
public sealed class ClipTextTransformer : nn.Module<Tensor, ClipTextOutput>
{
    private readonly ClipTextEmbeddings embeddings;
    private readonly ClipEncoder encoder;
    private readonly LayerNorm final_layer_norm;

    /// <summary>Creates a text transformer of the given architecture with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    public ClipTextTransformer(ClipTextConfig config) : base(nameof(ClipTextTransformer))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        embeddings = new ClipTextEmbeddings(config);
        encoder = new ClipEncoder(config);
        final_layer_norm = nn.LayerNorm(config.HiddenSize, eps: config.LayerNormEps);
        RegisterComponents();
    }

    /// <summary>The architecture.</summary>
    public ClipTextConfig Config { get; }

    /// <summary>The token and position embeddings.</summary>
    public ClipTextEmbeddings Embeddings => embeddings;

    /// <summary>The encoder layers.</summary>
    public ClipEncoder Encoder => encoder;

    /// <summary>The layer norm applied to the encoder output (<c>final_layer_norm</c>).</summary>
    public LayerNorm FinalLayerNorm => final_layer_norm;

    /// <summary>Runs the tower on a batch of token ids with the causal mask only.</summary>
    /// <param name="input">Token ids, an integer tensor [B, N], N ≤ <c>max_position_embeddings</c>.</param>
    /// <returns>The last hidden state and the pooled output; <see cref="ClipTextOutput.TextEmbeds"/> is null.</returns>
    public override ClipTextOutput forward(Tensor input) => forward(input, null);

    /// <summary>Runs the tower on a batch of token ids with the causal mask and an optional padding mask.</summary>
    /// <param name="inputIds">Token ids, an integer tensor [B, N], N ≤ <c>max_position_embeddings</c>.</param>
    /// <param name="attentionMask">
    /// HF's <c>attention_mask</c>: shape [B, N], 1 for tokens to attend to and 0 for padding (integer, boolean or floating
    /// dtype, values 0 and 1 only), or null for none.
    /// </param>
    /// <returns>The last hidden state and the pooled output; <see cref="ClipTextOutput.TextEmbeds"/> is null.</returns>
    /// <exception cref="ArgumentException">The ids or the mask have the wrong dtype, shape or values.</exception>
    public ClipTextOutput forward(Tensor inputIds, Tensor? attentionMask)
    {
        ClipTextEmbeddings.CheckInputIds(inputIds, Config);
        using var scope = torch.NewDisposeScope();
        var hidden = embeddings.forward(inputIds);
        var mask = BuildAttentionMask(inputIds.shape[0], inputIds.shape[1], attentionMask, hidden.dtype, hidden.device);
        var last = final_layer_norm.forward(encoder.forward(hidden, mask));
        var pooled = Pool(last, inputIds, Config.EosTokenId);
        return new ClipTextOutput(last.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope(), null);
    }

    /// <summary>
    /// The additive mask HF builds for the text tower: the causal mask (the dtype's most negative finite value above the
    /// diagonal, 0 elsewhere) plus, with a padding mask, that value wherever the key is padding. Shape [B, 1, N, N].
    /// </summary>
    internal static Tensor BuildAttentionMask(long batch, long tokens, Tensor? attentionMask, ScalarType dtype, Device device)
    {
        double min = MostNegative(dtype);
        using var scope = torch.NewDisposeScope();
        var causal = torch.full([tokens, tokens], min, dtype: dtype, device: device).triu(1).view(1, 1, tokens, tokens)
            .expand(batch, 1, tokens, tokens);
        if (attentionMask is null)
        {
            return causal.MoveToOuterDisposeScope();
        }

        if (attentionMask.dim() != 2 || attentionMask.shape[0] != batch || attentionMask.shape[1] != tokens)
        {
            throw new ArgumentException(
                $"attention_mask must have the shape of input_ids [{batch}, {tokens}], got [{string.Join(", ", attentionMask.shape)}].",
                nameof(attentionMask));
        }

        if (attentionMask.is_complex())
        {
            throw new ArgumentException($"attention_mask must be real, got {attentionMask.dtype}.", nameof(attentionMask));
        }

        var values = attentionMask.to(dtype, device);
        if (!((values == 0) | (values == 1)).all().item<bool>())
        {
            throw new ArgumentException("attention_mask may only hold 0 (padding) and 1 (token).", nameof(attentionMask));
        }

        var inverted = 1.0 - values.view(batch, 1, 1, tokens).expand(batch, 1, tokens, tokens);
        var padding = inverted.masked_fill(inverted.to_type(ScalarType.Bool), min);
        var combined = padding + causal;
        return combined.MoveToOuterDisposeScope();
    }

    /// <summary>Selects each row's end-of-text position of <paramref name="lastHiddenState"/> as transformers does.</summary>
    internal static Tensor Pool(Tensor lastHiddenState, Tensor inputIds, int eosTokenId)
    {
        using var scope = torch.NewDisposeScope();
        var ids = inputIds.to(ScalarType.Int32, lastHiddenState.device);
        var position = eosTokenId == 2
            ? ids.argmax(-1)
            : (ids == eosTokenId).to_type(ScalarType.Int32).argmax(-1);
        long batch = lastHiddenState.shape[0], width = lastHiddenState.shape[2];
        var index = position.view(batch, 1, 1).expand(batch, 1, width);
        var pooled = lastHiddenState.gather(1, index).squeeze(1);
        return pooled.MoveToOuterDisposeScope();
    }

    private static double MostNegative(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => float.MinValue,
        ScalarType.Float64 => double.MinValue,
        ScalarType.Float16 => -65504.0,
        ScalarType.BFloat16 => -3.3895313892515355e38,
        _ => throw new ArgumentException($"The text tower must hold floating-point weights, got {dtype}.", nameof(dtype)),
    };
}
