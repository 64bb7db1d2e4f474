using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Text;
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
            _logitScale = FrozenParameter(tensor(logitScale, textEmbeddings.dtype, device: textEmbeddings.device));
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

    /// <summary>
    /// Builds CLIP's zero-shot head from class names as FusionBench's <c>setup_zero_shot_classification_head</c> does
    /// (<c>HFCLIPClassifier.set_classification_task</c>): for each class, every template is filled with the class name,
    /// tokenised and encoded by the text tower (<c>text_embeds</c>: the pooled output after <c>text_projection</c>);
    /// each embedding is normalised to unit length, the class's embeddings are averaged over the templates and the mean
    /// is normalised again. The head's <c>logit_scale</c> is the model's (the logarithm, as CLIP stores it). Texts are
    /// padded to the tokenizer's context length with an attention mask; since the text tower is causal, this gives the
    /// same embeddings as FusionBench's padding to the longest prompt. The prompts are encoded on the model's device and
    /// the head is created there.
    /// </summary>
    /// <param name="clip">The CLIP model (its text tower, <c>text_projection</c> and <c>logit_scale</c> are used).</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="classNames">The class names, in class order (they become the head's <see cref="TaskHead.ClassNames"/>).</param>
    /// <param name="templates">The prompt templates, each with exactly one <c>{}</c> where the class name goes (Python's <c>str.format</c> placeholder).</param>
    /// <param name="batchSize">The most prompts encoded at once. The default value is 64.</param>
    /// <returns>The frozen head, float32, with one row per class.</returns>
    /// <exception cref="ArgumentException">
    /// A list is empty, a class name is null or empty, a template lacks its single <c>{}</c>, or the tokenizer does not
    /// fit the model (context length above <c>max_position_embeddings</c>, another <c>eos_token_id</c>).
    /// </exception>
    /// <exception cref="InvalidDataException">The tokenizer's vocabulary size differs from the model's <c>vocab_size</c>.</exception>
    public static ZeroShotClassificationHead FromClassNames(
        ClipModel clip, ClipTokenizer tokenizer, IReadOnlyList<string> classNames, IReadOnlyList<string> templates, int batchSize = 64)
    {
        ArgumentNullException.ThrowIfNull(clip);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(classNames);
        ArgumentNullException.ThrowIfNull(templates);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        CheckClassNameList(classNames);
        if (templates.Count == 0)
        {
            throw new ArgumentException("templates is empty; give at least one prompt template such as \"a photo of a {}.\".", nameof(templates));
        }

        foreach (string template in templates)
        {
            CheckTemplate(template);
        }

        var text = clip.Config.TextConfig;
        tokenizer.CheckAgainst(text.VocabSize);
        if (tokenizer.ContextLength > text.MaxPositionEmbeddings)
        {
            throw new ArgumentException(
                $"The tokenizer's context length ({tokenizer.ContextLength}) exceeds the text model's max_position_embeddings ({text.MaxPositionEmbeddings}).",
                nameof(tokenizer));
        }

        if (!text.UsesLegacyEosPooling && tokenizer.EosTokenId != text.EosTokenId)
        {
            throw new ArgumentException(
                $"The tokenizer's end-of-text id ({tokenizer.EosTokenId}) differs from the text model's eos_token_id ({text.EosTokenId}).",
                nameof(tokenizer));
        }

        var prompts = classNames.SelectMany(name => templates.Select(template => template.Replace("{}", name, StringComparison.Ordinal))).ToArray();
        var device = DeviceOf.Module(clip);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var features = new List<Tensor>();
        for (int start = 0; start < prompts.Length; start += batchSize)
        {
            var batch = prompts.AsSpan(start, Math.Min(batchSize, prompts.Length - start)).ToArray();
            var ids = tokenizer.EncodeBatch(batch, out var mask);
            features.Add(clip.GetTextFeatures(DeviceOf.On(ids, device), DeviceOf.On(mask, device)));
        }

        return FromTextFeatures(cat(features, 0), classNames.Count, templates.Count, clip.LogitScale, classNames);
    }

    /// <summary>
    /// Builds CLIP's zero-shot head from prompts that are already tokenised: as
    /// <see cref="FromClassNames(ClipModel, ClipTokenizer, IReadOnlyList{string}, IReadOnlyList{string}, int)"/>, with
    /// the prompts given as token ids, class-major (row <c>c · templateCount + t</c> is template t of class c).
    /// </summary>
    /// <param name="clip">The CLIP model (its text tower, <c>text_projection</c> and <c>logit_scale</c> are used).</param>
    /// <param name="inputIds">Token ids, an integer tensor [classCount · templateCount, N].</param>
    /// <param name="attentionMask">HF's <c>attention_mask</c> of the same shape (1 = token, 0 = padding), or null.</param>
    /// <param name="classCount">The number of classes C.</param>
    /// <param name="templateCount">The number of templates T per class.</param>
    /// <param name="classNames">The class names, or null.</param>
    /// <param name="batchSize">The most prompts encoded at once. The default value is 64.</param>
    /// <returns>The frozen head, float32, with one row per class.</returns>
    /// <exception cref="ArgumentException">The ids do not have C · T rows, or the ids or the mask are invalid for the model.</exception>
    public static ZeroShotClassificationHead FromTokenIds(
        ClipModel clip, Tensor inputIds, Tensor? attentionMask, int classCount, int templateCount, IReadOnlyList<string>? classNames = null, int batchSize = 64)
    {
        ArgumentNullException.ThrowIfNull(clip);
        ArgumentNullException.ThrowIfNull(inputIds);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(templateCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        if (inputIds.dim() != 2 || inputIds.shape[0] != (long)classCount * templateCount)
        {
            throw new ArgumentException(
                $"inputIds must have shape [classCount * templateCount = {(long)classCount * templateCount}, N], got [{string.Join(", ", inputIds.shape)}].",
                nameof(inputIds));
        }

        if (attentionMask is not null && !attentionMask.shape.SequenceEqual(inputIds.shape))
        {
            throw new ArgumentException(
                $"attentionMask must have the shape of inputIds [{string.Join(", ", inputIds.shape)}], got [{string.Join(", ", attentionMask.shape)}].",
                nameof(attentionMask));
        }

        if (classNames is not null)
        {
            CheckClassNameList(classNames);
        }

        var device = DeviceOf.Module(clip);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var features = new List<Tensor>();
        long rows = inputIds.shape[0];
        for (long start = 0; start < rows; start += batchSize)
        {
            long length = Math.Min(batchSize, rows - start);
            var mask = attentionMask is null ? null : DeviceOf.On(attentionMask.narrow(0, start, length), device);
            features.Add(clip.GetTextFeatures(DeviceOf.On(inputIds.narrow(0, start, length), device), mask));
        }

        return FromTextFeatures(cat(features, 0), classCount, templateCount, clip.LogitScale, classNames);
    }

    /// <summary>Normalise each prompt's features, average each class's, normalise again; CLIP's logit scale.</summary>
    private static ZeroShotClassificationHead FromTextFeatures(
        Tensor features, int classCount, int templateCount, Tensor logitScale, IReadOnlyList<string>? classNames)
    {
        var perPrompt = features / features.norm(1, true);
        var mean = perPrompt.view(classCount, templateCount, -1).mean([1]);
        var classEmbeddings = mean / mean.norm(1, true);
        double scale = logitScale.detach().to_type(ScalarType.Float64).item<double>();
        return new ZeroShotClassificationHead(classEmbeddings, scale, classNames);
    }

    private static void CheckClassNameList(IReadOnlyList<string> classNames)
    {
        if (classNames.Count == 0)
        {
            throw new ArgumentException("classNames is empty; a head needs at least one class.", nameof(classNames));
        }

        for (int i = 0; i < classNames.Count; i++)
        {
            if (string.IsNullOrEmpty(classNames[i]))
            {
                throw new ArgumentException($"classNames[{i}] is null or empty.", nameof(classNames));
            }
        }
    }

    private static void CheckTemplate(string template)
    {
        if (template is null)
        {
            throw new ArgumentException("templates holds a null template.", "templates");
        }

        int first = template.IndexOf("{}", StringComparison.Ordinal);
        if (first < 0 || template.IndexOf("{}", first + 2, StringComparison.Ordinal) >= 0)
        {
            throw new ArgumentException($"The template \"{template}\" must hold exactly one {{}} where the class name goes.", "templates");
        }
    }

    /// <summary>Saves tensors <c>text_embeds</c> and <c>logit_scale</c> (the logarithm) with <see cref="TaskHead.HeadKindKey"/> = <c>zero_shot</c>.</summary>
    /// <param name="path">The file path.</param>
    public override void Save(string path) =>
        SaveTensors(path, Kind, new Dictionary<string, Tensor> { ["text_embeds"] = _textEmbeds, ["logit_scale"] = _logitScale });
}
