using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// CLIP's zero-shot classifier: one text embedding per class, normalised to unit length, and a logit scale;
/// logits = exp(<c>logit_scale</c>) · normalise(x) · Eᵀ, the scaled cosine similarity between image and text embeddings.
/// As in CLIP, <c>logit_scale</c> holds the natural logarithm of the multiplier (4.6052 for OpenAI's checkpoints, whose
/// multiplier is 100). Saved with <see cref="TaskHead.HeadKindKey"/> = <c>zero_shot</c>, tensors <c>text_embeds</c> [C, P]
/// and <c>logit_scale</c> (a scalar: the logarithm).
/// </summary>
public sealed class ZeroShotClassificationHead : TaskHead
{
    /// <summary>The <see cref="TaskHead.HeadKindKey"/> value of this head.</summary>
    public const string Kind = "zero_shot";

    [ComponentName(Name = "text_embeds")]
    private readonly Parameter _textEmbeds;

    [ComponentName(Name = "logit_scale")]
    private readonly Parameter _logitScale;

    /// <summary>Creates the head, frozen, from class text embeddings (copied and normalised to unit length).</summary>
    /// <param name="textEmbeddings">The text embeddings, shape [C, P], floating point, finite, no zero row.</param>
    /// <param name="logitScale">CLIP's <c>logit_scale</c>: the natural logarithm of the multiplier, finite.</param>
    /// <param name="classNames">The class names, or <see langword="null"/>.</param>
    /// <exception cref="ArgumentException">The embeddings have the wrong shape or dtype, NaN/Inf or a zero row, or the scale is not finite.</exception>
    public ZeroShotClassificationHead(Tensor textEmbeddings, double logitScale, IReadOnlyList<string>? classNames = null)
        : base(nameof(ZeroShotClassificationHead), classNames)
    {
        ArgumentNullException.ThrowIfNull(textEmbeddings);
        if (!double.IsFinite(logitScale))
        {
            throw new ArgumentOutOfRangeException(nameof(logitScale), logitScale, "logitScale must be finite.");
        }
        if (textEmbeddings.dim() != 2 || textEmbeddings.shape[0] == 0 || textEmbeddings.shape[1] == 0 || !textEmbeddings.is_floating_point())
        {
            throw new ArgumentException($"textEmbeddings must be a non-empty floating-point matrix [C, P], got {textEmbeddings.dtype} [{string.Join(", ", textEmbeddings.shape)}].", nameof(textEmbeddings));
        }
        using (var scope = NewDisposeScope())
        {
            if (!textEmbeddings.isfinite().all().item<bool>())
            {
                throw new ArgumentException("textEmbeddings contains NaN or infinite values.", nameof(textEmbeddings));
            }
            var norms = textEmbeddings.detach().norm(1, true);
            if ((norms == 0).any().item<bool>())
            {
                throw new ArgumentException("textEmbeddings has a zero row, which cannot be normalised.", nameof(textEmbeddings));
            }
            _textEmbeds = FrozenParameter(textEmbeddings.detach() / norms);
            _logitScale = FrozenParameter(tensor(logitScale, textEmbeddings.dtype));
        }
        CheckClassNames();
        RegisterComponents();
    }

    /// <summary>The unit-length text embeddings, shape [C, P] (state-dict key <c>text_embeds</c>).</summary>
    public Parameter TextEmbeddings => _textEmbeds;

    /// <summary>CLIP's <c>logit_scale</c>: the logarithm of the multiplier, a scalar (state-dict key <c>logit_scale</c>).</summary>
    public Parameter LogitScale => _logitScale;

    /// <summary>The multiplier exp(<c>logit_scale</c>) applied to the cosine similarities.</summary>
    public double Scale => Math.Exp(_logitScale.to_type(ScalarType.Float64).item<double>());

    /// <inheritdoc />
    public override int ClassCount => (int)_textEmbeds.shape[0];

    /// <inheritdoc />
    public override int InputDimension => (int)_textEmbeds.shape[1];

    /// <summary>Computes exp(<c>logit_scale</c>) · normalise(features) · Eᵀ.</summary>
    /// <param name="features">The image embeddings, shape [B, P], the embeddings' dtype.</param>
    /// <returns>The logits, shape [B, C].</returns>
    public override Tensor forward(Tensor features)
    {
        CheckFeatures(features, _textEmbeds.dtype);
        using var scope = NewDisposeScope();
        var normalised = features / features.norm(1, true);
        var logits = _logitScale.exp() * normalised.matmul(_textEmbeds.t());
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>Saves tensors <c>text_embeds</c> and <c>logit_scale</c> (the logarithm) with <see cref="TaskHead.HeadKindKey"/> = <c>zero_shot</c>.</summary>
    /// <param name="path">The file path.</param>
    public override void Save(string path) =>
        SaveTensors(path, Kind, new Dictionary<string, Tensor> { ["text_embeds"] = _textEmbeds, ["logit_scale"] = _logitScale });
}
