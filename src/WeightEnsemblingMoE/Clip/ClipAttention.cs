using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Moe;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// The multi-head self-attention of a CLIP encoder layer (HF <c>CLIPAttention</c>): <c>q_proj</c>, <c>k_proj</c>,
/// <c>v_proj</c> and <c>out_proj</c> (all with biases), scaled dot-product attention with scale head_dim^-0.5 and softmax
/// in the input dtype. The vision tower runs it without a mask; the text tower passes an additive mask (causal, plus
/// padding) that is added to the scaled scores before the softmax, as HF's eager attention does.
/// </summary>
public sealed class ClipAttention : nn.Module<Tensor, Tensor>, IMergeableModule
{
    private static readonly string[] LayerNames = ["q_proj", "k_proj", "v_proj", "out_proj"];

    private readonly Linear q_proj;
    private readonly Linear k_proj;
    private readonly Linear v_proj;
    private readonly Linear out_proj;

    /// <summary>Creates an attention block with randomly initialised projections.</summary>
    /// <param name="hiddenSize">The width D.</param>
    /// <param name="numHeads">The number of heads; must divide <paramref name="hiddenSize"/>.</param>
    public ClipAttention(int hiddenSize, int numHeads) : base(nameof(ClipAttention))
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(hiddenSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numHeads);
        if (hiddenSize % numHeads != 0)
        {
            throw new ArgumentException($"hiddenSize ({hiddenSize}) is not divisible by numHeads ({numHeads}).", nameof(numHeads));
        }

        HiddenSize = hiddenSize;
        NumHeads = numHeads;
        q_proj = nn.Linear(hiddenSize, hiddenSize);
        k_proj = nn.Linear(hiddenSize, hiddenSize);
        v_proj = nn.Linear(hiddenSize, hiddenSize);
        out_proj = nn.Linear(hiddenSize, hiddenSize);
        RegisterComponents();
    }

    /// <summary>The width D.</summary>
    public int HiddenSize { get; }

    /// <summary>The number of attention heads.</summary>
    public int NumHeads { get; }

    /// <summary>The width of one head, D / heads.</summary>
    public int HeadDim => HiddenSize / NumHeads;

    /// <inheritdoc/>
    public IReadOnlyList<string> LinearLayerNames => LayerNames;

    /// <summary>Applies self-attention with the block's own projections.</summary>
    /// <param name="input">Tokens, shape [B, N, D].</param>
    /// <returns>Shape [B, N, D].</returns>
    public override Tensor forward(Tensor input) => Forward(input, OwnLinear);

    /// <summary>Applies self-attention with the block's own projections and an additive attention mask.</summary>
    /// <param name="input">Tokens, shape [B, N, D].</param>
    /// <param name="attentionMask">
    /// An additive mask broadcastable to the scores [B, heads, N, N] (typically [B, 1, N, N]: 0 where a query may attend a
    /// key, a very negative value where it may not), or null for no mask.
    /// </param>
    /// <returns>Shape [B, N, D].</returns>
    public Tensor forward(Tensor input, Tensor? attentionMask) => Forward(input, attentionMask, OwnLinear);

    /// <inheritdoc/>
    public Tensor Forward(Tensor input, LinearLayerFunction linear) => Forward(input, null, linear);

    /// <summary>Runs the attention with an additive mask, computing every linear layer through <paramref name="linear"/>.</summary>
    /// <param name="input">Tokens, shape [B, N, D].</param>
    /// <param name="attentionMask">An additive mask broadcastable to [B, heads, N, N], or null for no mask.</param>
    /// <param name="linear">Computes the linear layer with the given name on the given input.</param>
    /// <returns>Shape [B, N, D].</returns>
    public Tensor Forward(Tensor input, Tensor? attentionMask, LinearLayerFunction linear)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(linear);
        if (input.dim() != 3 || input.shape[2] != HiddenSize)
        {
            throw new ArgumentException(
                $"The attention input must have shape [B, N, {HiddenSize}], got [{string.Join(", ", input.shape)}].", nameof(input));
        }

        using var scope = torch.NewDisposeScope();
        long batch = input.shape[0], tokens = input.shape[1];
        Tensor Heads(Tensor x) => x.view(batch, tokens, NumHeads, HeadDim).transpose(1, 2); // [B, H, N, hd]
        var query = Heads(linear("q_proj", input));
        var key = Heads(linear("k_proj", input));
        var value = Heads(linear("v_proj", input));
        var scores = torch.matmul(query, key.transpose(-1, -2)) * Math.Pow(HeadDim, -0.5); // [B, H, N, N]
        if (attentionMask is not null)
        {
            scores = scores + attentionMask;
        }

        var weights = scores.softmax(-1);
        var context = torch.matmul(weights, value).transpose(1, 2).reshape(batch, tokens, HiddenSize);
        var result = linear("out_proj", context);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The linear layer with the given state-dict name (one of <see cref="LinearLayerNames"/>).</summary>
    /// <param name="layerName">The layer name, e.g. <c>q_proj</c>.</param>
    /// <returns>The module's own layer (not a copy).</returns>
    /// <exception cref="ArgumentException">There is no such layer.</exception>
    public Linear GetLinearLayer(string layerName) => layerName switch
    {
        "q_proj" => q_proj,
        "k_proj" => k_proj,
        "v_proj" => v_proj,
        "out_proj" => out_proj,
        _ => throw new ArgumentException($"ClipAttention has no linear layer named '{layerName}'.", nameof(layerName)),
    };

    private Tensor OwnLinear(string layerName, Tensor input) => GetLinearLayer(layerName).forward(input);
}
