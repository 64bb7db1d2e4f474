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
/// <remarks>
/// The attention core is one libtorch <c>scaled_dot_product_attention</c> call (what HF's default <c>sdpa</c>
/// implementation calls): the eager formula softmax(q·kᵀ·head_dim^-0.5 + mask)·v in one kernel, without the eager ops'
/// head-folding copies and separate score, scale and softmax passes (see docs/benchmarks.md, "FLOP/s"). A masked
/// attention that records a graph (the text tower in training) keeps the eager ops, whose gradients for rows with every
/// key masked that kernel does not reproduce. The mask must have the tokens' dtype.
/// </remarks>
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
    /// <exception cref="ArgumentException">The input is not [B, N, D], or the mask's dtype is not the input's.</exception>
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
        var mask = CheckMask(attentionMask, input.dtype);
        long batch = input.shape[0], tokens = input.shape[1];
        Tensor Heads(Tensor x) => x.view(batch, tokens, NumHeads, HeadDim).transpose(1, 2); // [B, H, N, hd]
        var query = Heads(linear("q_proj", input));
        var key = Heads(linear("k_proj", input));
        var value = Heads(linear("v_proj", input));
        // One libtorch kernel for softmax(q·kᵀ·hd^-0.5 + mask)·v (its default scale 1/sqrt(hd) is HF's), except for a
        // masked attention whose graph is recorded (see EagerAttention).
        var context = mask is not null && query.requires_grad
            ? EagerAttention(query, key, value, mask, HeadDim)
            : nn.functional.scaled_dot_product_attention(query, key, value, mask);
        // [B, H, N, hd] -> [B, N, D]; libtorch's CPU kernel already lays its output out as [B, N, H, hd] (a view, no copy).
        var result = linear("out_proj", context.transpose(1, 2).reshape(batch, tokens, HiddenSize));
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// HF's eager attention softmax(q·kᵀ·hd^-0.5 + mask)·v as separate ops. Used for a masked attention whose graph is
    /// recorded: libtorch's CPU kernel recomputes the softmax in its backward from a stored log-sum-exp, which loses the
    /// row's sum when every key of a row is masked with the dtype's most negative value (a padding query with left
    /// padding: the eager formula's uniform weights there, and the gradients through them, come out different).
    /// </summary>
    /// <param name="query">Queries [B, H, N, hd].</param>
    /// <param name="key">Keys [B, H, N, hd].</param>
    /// <param name="value">Values [B, H, N, hd].</param>
    /// <param name="attentionMask">An additive mask broadcastable to [B, H, N, N].</param>
    /// <param name="headDim">The head width hd.</param>
    /// <returns>The context [B, H, N, hd].</returns>
    internal static Tensor EagerAttention(Tensor query, Tensor key, Tensor value, Tensor attentionMask, int headDim)
    {
        var scores = (torch.matmul(query, key.transpose(-1, -2)) * Math.Pow(headDim, -0.5)) + attentionMask; // [B, H, N, N]
        return torch.matmul(scores.softmax(-1), value);
    }

    // scaled_dot_product_attention adds a floating mask of the query's dtype to the scaled scores, as the eager sum did; it
    // reads a boolean mask as "may attend" and refuses other dtypes. A mask of another floating dtype is refused too: the
    // eager ops used to promote the scores and then fail in the second matmul (a float64 mask on float32 tokens
    // terminated the process), and converting it is not neutral (double.MinValue becomes -inf in float32).
    private static Tensor? CheckMask(Tensor? attentionMask, ScalarType dtype)
    {
        if (attentionMask is not null && attentionMask.dtype != dtype)
        {
            throw new ArgumentException(
                $"The attention mask must be an additive mask of the tokens' dtype {dtype} (0 where a query may attend a key, a very negative value where it may not), got {attentionMask.dtype}.",
                nameof(attentionMask));
        }

        return attentionMask;
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
