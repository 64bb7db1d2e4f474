using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// The linear classifier a fine-tuned model carries: logits = x Wᵀ + b, with state-dict keys <c>weight</c> [C, F] and
/// <c>bias</c> [C] as in <c>torch.nn.Linear</c>. Saved with <see cref="TaskHead.HeadKindKey"/> = <c>linear</c>.
/// </summary>
public sealed class LinearClassificationHead : TaskHead
{
    /// <summary>The <see cref="TaskHead.HeadKindKey"/> value of this head.</summary>
    public const string Kind = "linear";

    [ComponentName(Name = "weight")]
    private readonly Parameter _weight;

    [ComponentName(Name = "bias")]
    private readonly Parameter _bias;

    /// <summary>Creates a head initialised like <c>torch.nn.Linear</c> (uniform in ±1/√F), frozen.</summary>
    /// <param name="inputDimension">The feature width F, at least 1.</param>
    /// <param name="classCount">The number of classes C, at least 1.</param>
    /// <param name="classNames">The class names, or <see langword="null"/>.</param>
    public LinearClassificationHead(int inputDimension, int classCount, IReadOnlyList<string>? classNames = null)
        : base(nameof(LinearClassificationHead), classNames)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(inputDimension, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        double bound = 1 / Math.Sqrt(inputDimension);
        using (var scope = NewDisposeScope())
        {
            _weight = FrozenParameter(empty(classCount, inputDimension).uniform_(-bound, bound));
            _bias = FrozenParameter(empty(classCount).uniform_(-bound, bound));
        }
        CheckClassNames();
        RegisterComponents();
    }

    /// <summary>Creates a head from existing weights (copied), frozen.</summary>
    /// <param name="weight">The weight, shape [C, F], floating point, finite.</param>
    /// <param name="bias">The bias, shape [C], same dtype, finite.</param>
    /// <param name="classNames">The class names, or <see langword="null"/>.</param>
    /// <exception cref="ArgumentException">A tensor has the wrong shape or dtype, or holds NaN/Inf; the message names it.</exception>
    public LinearClassificationHead(Tensor weight, Tensor bias, IReadOnlyList<string>? classNames = null)
        : base(nameof(LinearClassificationHead), classNames)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentNullException.ThrowIfNull(bias);
        if (weight.dim() != 2 || weight.shape[0] == 0 || weight.shape[1] == 0 || !weight.is_floating_point())
        {
            throw new ArgumentException($"weight must be a non-empty floating-point matrix [C, F], got {weight.dtype} [{string.Join(", ", weight.shape)}].", nameof(weight));
        }
        if (bias.dim() != 1 || bias.shape[0] != weight.shape[0] || bias.dtype != weight.dtype)
        {
            throw new ArgumentException($"bias must have shape [{weight.shape[0]}] and dtype {weight.dtype}, got {bias.dtype} [{string.Join(", ", bias.shape)}].", nameof(bias));
        }
        using (var scope = NewDisposeScope())
        {
            if (!weight.isfinite().all().item<bool>())
            {
                throw new ArgumentException("weight contains NaN or infinite values.", nameof(weight));
            }
            if (!bias.isfinite().all().item<bool>())
            {
                throw new ArgumentException("bias contains NaN or infinite values.", nameof(bias));
            }
        }
        using (var scope = NewDisposeScope())
        {
            _weight = FrozenParameter(weight.detach().clone());
            _bias = FrozenParameter(bias.detach().clone());
        }
        CheckClassNames();
        RegisterComponents();
    }

    /// <summary>The weight, shape [C, F] (state-dict key <c>weight</c>).</summary>
    public Parameter Weight => _weight;

    /// <summary>The bias, shape [C] (state-dict key <c>bias</c>).</summary>
    public Parameter Bias => _bias;

    /// <inheritdoc />
    public override int ClassCount => (int)_weight.shape[0];

    /// <inheritdoc />
    public override int InputDimension => (int)_weight.shape[1];

    /// <summary>Computes logits = features Wᵀ + b.</summary>
    /// <param name="features">The features, shape [B, F], the weight's dtype.</param>
    /// <returns>The logits, shape [B, C].</returns>
    public override Tensor forward(Tensor features)
    {
        CheckFeatures(features, _weight.dtype);
        return nn.functional.linear(features, _weight, _bias);
    }

    /// <summary>Saves tensors <c>weight</c> and <c>bias</c> with <see cref="TaskHead.HeadKindKey"/> = <c>linear</c>.</summary>
    /// <param name="path">The file path.</param>
    public override void Save(string path) =>
        SaveTensors(path, Kind, new Dictionary<string, Tensor> { ["weight"] = _weight, ["bias"] = _bias });
}
