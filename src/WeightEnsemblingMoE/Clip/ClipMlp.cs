using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Moe;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// The MLP of a CLIP encoder layer (HF <c>CLIPMLP</c>): <c>fc2(act(fc1(x)))</c> with <c>act</c> quick-GELU or GELU.
/// </summary>
public sealed class ClipMlp : nn.Module<Tensor, Tensor>, IMergeableModule
{
    private static readonly string[] LayerNames = ["fc1", "fc2"];

    private readonly Linear fc1;
    private readonly Linear fc2;

    /// <summary>Creates an MLP with randomly initialised layers.</summary>
    /// <param name="hiddenSize">The input and output width D.</param>
    /// <param name="intermediateSize">The hidden width.</param>
    /// <param name="activation">The activation between the two layers.</param>
    public ClipMlp(int hiddenSize, int intermediateSize, ClipActivation activation) : base(nameof(ClipMlp))
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(hiddenSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(intermediateSize);
        if (!Enum.IsDefined(activation))
        {
            throw new ArgumentOutOfRangeException(nameof(activation), activation, "Unknown CLIP activation.");
        }

        Activation = activation;
        fc1 = nn.Linear(hiddenSize, intermediateSize);
        fc2 = nn.Linear(intermediateSize, hiddenSize);
        RegisterComponents();
    }

    /// <summary>The activation between <c>fc1</c> and <c>fc2</c>.</summary>
    public ClipActivation Activation { get; }

    /// <inheritdoc/>
    public IReadOnlyList<string> LinearLayerNames => LayerNames;

    /// <summary>Applies the MLP with its own layers.</summary>
    /// <param name="input">Tokens, shape [B, N, D].</param>
    /// <returns>Shape [B, N, D].</returns>
    public override Tensor forward(Tensor input) => Forward(input, OwnLinear);

    /// <inheritdoc/>
    public Tensor Forward(Tensor input, LinearLayerFunction linear)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(linear);
        using var scope = torch.NewDisposeScope();
        var hidden = linear("fc1", input);
        hidden = Activate(hidden, Activation);
        var result = linear("fc2", hidden);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Applies a CLIP activation to <paramref name="input"/> (not modified).</summary>
    internal static Tensor Activate(Tensor input, ClipActivation activation) => activation switch
    {
        ClipActivation.QuickGelu => QuickGelu(input),
        ClipActivation.Gelu => nn.functional.gelu(input),
        _ => throw new ArgumentOutOfRangeException(nameof(activation), activation, "Unknown CLIP activation."),
    };

    /// <summary>
    /// x · σ(1.702 x), bit for bit HF's <c>QuickGELUActivation</c>, with one [B, N, F] temporary instead of two: σ is
    /// taken in place on the fresh 1.702 x (the scalar product keeps nothing for autograd, and sigmoid's backward needs
    /// only its output), and without a graph the product is written into that temporary too (with one, sigmoid's saved
    /// output must stay unchanged, so the product is a new tensor).
    /// </summary>
    internal static Tensor QuickGelu(Tensor input)
    {
        var gate = input.mul(1.702).sigmoid_();
        return torch.is_grad_enabled() && input.requires_grad ? input.mul(gate) : gate.mul_(input);
    }

    /// <summary>The linear layer with the given state-dict name (one of <see cref="LinearLayerNames"/>).</summary>
    /// <param name="layerName">The layer name, e.g. <c>fc1</c>.</param>
    /// <returns>The module's own layer (not a copy).</returns>
    /// <exception cref="ArgumentException">There is no such layer.</exception>
    public Linear GetLinearLayer(string layerName) => layerName switch
    {
        "fc1" => fc1,
        "fc2" => fc2,
        _ => throw new ArgumentException($"ClipMlp has no linear layer named '{layerName}'.", nameof(layerName)),
    };

    private Tensor OwnLinear(string layerName, Tensor input) => GetLinearLayer(layerName).forward(input);
}
