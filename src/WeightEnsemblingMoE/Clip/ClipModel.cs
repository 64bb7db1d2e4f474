using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Models;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// A full CLIP model with the module structure and parameter names of Hugging Face's <c>CLIPModel</c>:
/// <c>text_model.*</c>, <c>vision_model.*</c>, <c>visual_projection.weight</c>, <c>text_projection.weight</c> (both
/// without bias) and the scalar <c>logit_scale</c> (the logarithm of the similarity multiplier). The towers are also
/// exposed as a <see cref="ClipVisionModel"/> (<see cref="VisionModel"/>) and a <see cref="ClipTextModel"/>
/// (<see cref="TextModel"/>) that share this model's modules, so the rest of the library can use the image tower.
/// </summary>
public sealed class ClipModel : nn.Module<Tensor, Tensor, ClipOutput>
{
    // The towers are registered by hand under HF's flat keys (text_model, vision_model, visual_projection,
    // text_projection, logit_scale); the wrappers below share those modules and are not registered themselves, so
    // RegisterComponents (which would register them as extra submodules) is not called.
    private readonly ClipTextModel _text;
    private readonly ClipVisionModel _vision;
    private readonly Parameter logit_scale;

    /// <summary>Creates a model of the given architecture with randomly initialised parameters.</summary>
    /// <param name="config">The architecture; <c>logit_scale</c> starts at <see cref="ClipConfig.LogitScaleInitValue"/>.</param>
    public ClipModel(ClipConfig config) : base(nameof(ClipModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        var textModel = new ClipTextTransformer(config.TextConfig);
        var visionModel = new ClipVisionTransformer(config.VisionConfig);
        var visualProjection = nn.Linear(config.VisionConfig.HiddenSize, config.ProjectionDim, hasBias: false);
        var textProjection = nn.Linear(config.TextConfig.HiddenSize, config.ProjectionDim, hasBias: false);
        logit_scale = DisposeScopes.Escaping(() => nn.Parameter(torch.tensor((float)config.LogitScaleInitValue)));
        register_module("text_model", textModel);
        register_module("vision_model", visionModel);
        register_module("visual_projection", visualProjection);
        register_module("text_projection", textProjection);
        register_parameter("logit_scale", logit_scale);
        _text = new ClipTextModel(config.TextConfig, textModel, textProjection);
        _vision = new ClipVisionModel(config.VisionConfig, visionModel, visualProjection);
    }

    /// <summary>The architecture.</summary>
    public ClipConfig Config { get; }

    /// <summary>
    /// The image tower with its projection as a <see cref="ClipVisionModel"/> (keys <c>vision_model.*</c>,
    /// <c>visual_projection.weight</c>). It shares this model's modules: changes to either show in both. This model owns
    /// it; do not dispose it separately.
    /// </summary>
    public ClipVisionModel VisionModel => _vision;

    /// <summary>
    /// The text tower with its projection as a <see cref="ClipTextModel"/> (keys <c>text_model.*</c>,
    /// <c>text_projection.weight</c>). It shares this model's modules. This model owns it; do not dispose it separately.
    /// </summary>
    public ClipTextModel TextModel => _text;

    /// <summary>The projection of the pooled image output (<c>visual_projection</c>, no bias).</summary>
    public Linear VisualProjection => _vision.VisualProjection!;

    /// <summary>The projection of the pooled text output (<c>text_projection</c>, no bias).</summary>
    public Linear TextProjection => _text.TextProjection!;

    /// <summary>CLIP's <c>logit_scale</c>: the natural logarithm of the similarity multiplier, a scalar.</summary>
    public Parameter LogitScale => logit_scale;

    /// <summary>Runs both towers with the causal text mask only (see <see cref="forward(Tensor, Tensor, Tensor?)"/>).</summary>
    /// <param name="input1">Token ids, an integer tensor [T, N].</param>
    /// <param name="input2">Pixel values [I, <c>num_channels</c>, <c>image_size</c>, <c>image_size</c>].</param>
    /// <returns>The logits and the normalised embeddings.</returns>
    public override ClipOutput forward(Tensor input1, Tensor input2) => forward(input1, input2, null);

    /// <summary>
    /// Runs both towers (HF <c>CLIPModel.forward</c>): the projected features of each side normalised to unit length,
    /// <c>logits_per_text</c> = exp(<c>logit_scale</c>) · text · imageᵀ and <c>logits_per_image</c> its transpose.
    /// </summary>
    /// <param name="inputIds">Token ids, an integer tensor [T, N], N ≤ <c>max_position_embeddings</c>.</param>
    /// <param name="pixelValues">Pixel values [I, <c>num_channels</c>, <c>image_size</c>, <c>image_size</c>].</param>
    /// <param name="attentionMask">HF's <c>attention_mask</c> [T, N] (1 = token, 0 = padding), or null.</param>
    /// <returns>The logits and the normalised embeddings.</returns>
    public ClipOutput forward(Tensor inputIds, Tensor pixelValues, Tensor? attentionMask)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ArgumentNullException.ThrowIfNull(pixelValues);
        using var scope = torch.NewDisposeScope();
        var image = _vision.GetImageFeatures(pixelValues);
        var text = _text.GetTextFeatures(inputIds, attentionMask);
        image = image / image.norm(1, true);
        text = text / text.norm(1, true);
        var logitsPerText = text.matmul(image.t()) * logit_scale.exp();
        var logitsPerImage = logitsPerText.t();
        return new ClipOutput(
            logitsPerImage.MoveToOuterDisposeScope(),
            logitsPerText.MoveToOuterDisposeScope(),
            text.MoveToOuterDisposeScope(),
            image.MoveToOuterDisposeScope());
    }

    /// <summary>The projected pooled image output (HF <c>get_image_features</c>), not normalised.</summary>
    /// <param name="pixelValues">Pixel values [B, <c>num_channels</c>, <c>image_size</c>, <c>image_size</c>].</param>
    /// <returns>Shape [B, projection_dim].</returns>
    public Tensor GetImageFeatures(Tensor pixelValues) => _vision.GetImageFeatures(pixelValues);

    /// <summary>The projected pooled text output (HF <c>get_text_features</c>), not normalised.</summary>
    /// <param name="inputIds">Token ids, an integer tensor [B, N], N ≤ <c>max_position_embeddings</c>.</param>
    /// <param name="attentionMask">HF's <c>attention_mask</c> [B, N] (1 = token, 0 = padding), or null.</param>
    /// <returns>Shape [B, projection_dim].</returns>
    public Tensor GetTextFeatures(Tensor inputIds, Tensor? attentionMask = null) => _text.GetTextFeatures(inputIds, attentionMask);

    /// <summary>
    /// Loads a Hugging Face <c>CLIPModel</c> folder: <c>config.json</c> (with <c>text_config</c> and
    /// <c>vision_config</c>) plus <c>model.safetensors</c> or a sharded <c>model.safetensors.index.json</c>. Every tensor
    /// must be present with the shape the config gives (a persisted <c>position_ids</c> buffer is skipped); weights of
    /// another floating dtype are converted to float32.
    /// </summary>
    /// <param name="folder">The model folder.</param>
    /// <returns>The loaded model (float32, on the CPU); the caller owns it.</returns>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">The config, the weights or a shard are missing.</exception>
    /// <exception cref="FormatException">The config is not valid JSON, a key has the wrong type, or <c>text_config</c> / <c>vision_config</c> is missing.</exception>
    /// <exception cref="ArgumentException">A config value is out of range; the message names the key.</exception>
    /// <exception cref="SafeTensorsFormatException">A weights file or the index is corrupt.</exception>
    /// <exception cref="InvalidDataException">
    /// A tensor is missing, unexpected, of the wrong shape or not finite; the message names the tensor, the file and the
    /// text config values that decide the shapes.
    /// </exception>
    public static ClipModel FromPretrained(string folder)
    {
        ClipCheckpointIO.RequireFolder(folder);
        string configPath = Path.Combine(folder, ClipCheckpointIO.ConfigFileName);
        IReadOnlyList<string> defaulted = [];
        var config = ClipConfigJson.FromFile(configPath, json => ClipConfig.Parse(ClipConfigJson.ParseObject(json), out defaulted));
        using var checkpoint = SafeTensorsCheckpoint.Open(folder);
        var model = new ClipModel(config);
        try
        {
            string hint = $"text_config: {config.TextConfig.DescribeShapes(defaulted)}; projection_dim={config.ProjectionDim}";
            ClipCheckpointIO.LoadInto(model, checkpoint, folder, IsSkipped, "CLIP model", hint);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Saves the model as a Hugging Face <c>CLIPModel</c> folder: <c>config.json</c> and <c>model.safetensors</c> (as
    /// held), each written atomically. <see cref="FromPretrained"/> reads it back bit for bit.
    /// </summary>
    /// <param name="folder">The folder (created if missing); existing files of the same names are replaced.</param>
    public void SaveTo(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ClipCheckpointIO.Save(this, folder, Config.ToJson());
    }

    /// <summary>
    /// Saves the model as <see cref="SaveTo(string)"/> does, with every floating tensor converted to
    /// <paramref name="dtype"/> (libtorch <c>to(dtype)</c>, round to nearest even) and written with that safetensors dtype
    /// (<c>F16</c>, <c>BF16</c>, <c>F32</c>); <c>torch_dtype</c> in <c>config.json</c> names it. The model itself is not
    /// changed. <see cref="SaveTo(string)"/> keeps the dtype the model holds (float32, whatever the checkpoints it was
    /// loaded or merged from held: merges are computed in float32 and never rounded behind the caller's back); pass
    /// <see cref="ScalarType.Float16"/> to write a merge of float16 experts at their size. <see cref="FromPretrained"/>
    /// reads the folder back (as float32).
    /// </summary>
    /// <param name="folder">The folder (created if missing).</param>
    /// <param name="dtype">Float32, Float16 or BFloat16.</param>
    /// <exception cref="ArgumentException"><paramref name="dtype"/> is none of those.</exception>
    /// <exception cref="InvalidOperationException">A tensor has NaN or infinite values, or a value outside <paramref name="dtype"/>'s range (nothing is written).</exception>
    public void SaveTo(string folder, ScalarType dtype)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ClipCheckpointIO.Save(this, folder, Config.ToJson(), dtype);
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            // The wrappers' own handles; the shared towers are disposed once (a disposed module ignores a second Dispose).
            _text.Dispose();
            _vision.Dispose();
        }

        base.Dispose(disposing);
    }

    private static bool IsSkipped(string name) =>
        name == "text_model.embeddings.position_ids" || name == "vision_model.embeddings.position_ids";
}
