using System.Globalization;
using System.Text.Json.Nodes;

namespace WeightEnsembling.Clip;

/// <summary>
/// The architecture of a CLIP vision tower, mirroring Hugging Face's <c>CLIPVisionConfig</c>. It reads and writes the
/// <c>config.json</c> of a <c>CLIPVisionModel</c> checkpoint and reads the nested <c>vision_config</c> of a full
/// <c>CLIPModel</c> checkpoint. The defaults are those of ViT-B/32.
/// </summary>
public sealed record ClipVisionConfig
{
    private const long MaxPositions = int.MaxValue;

    /// <summary>The largest <c>config.json</c> read (a real one has a few kilobytes).</summary>

    /// <summary>The width D of the transformer (<c>hidden_size</c>). The default value is 768.</summary>
    public int HiddenSize { get; init; } = 768;

    /// <summary>The width of the MLP hidden layer (<c>intermediate_size</c>). The default value is 3072.</summary>
    public int IntermediateSize { get; init; } = 3072;

    /// <summary>The number of encoder layers (<c>num_hidden_layers</c>). The default value is 12.</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary>The number of attention heads (<c>num_attention_heads</c>); must divide <see cref="HiddenSize"/>. The default value is 12.</summary>
    public int NumAttentionHeads { get; init; } = 12;

    /// <summary>The side of the square input image in pixels (<c>image_size</c>). The default value is 224.</summary>
    public int ImageSize { get; init; } = 224;

    /// <summary>The side of a square patch in pixels (<c>patch_size</c>); must divide <see cref="ImageSize"/>. The default value is 32.</summary>
    public int PatchSize { get; init; } = 32;

    /// <summary>The number of input channels (<c>num_channels</c>). The default value is 3.</summary>
    public int NumChannels { get; init; } = 3;

    /// <summary>The MLP activation (<c>hidden_act</c>). The default value is <see cref="ClipActivation.QuickGelu"/>.</summary>
    public ClipActivation HiddenAct { get; init; } = ClipActivation.QuickGelu;

    /// <summary>The epsilon of every layer norm (<c>layer_norm_eps</c>). The default value is 1e-5.</summary>
    public double LayerNormEps { get; init; } = 1e-5;

    /// <summary>The width of the image embedding after <c>visual_projection</c> (<c>projection_dim</c>). The default value is 512.</summary>
    public int ProjectionDim { get; init; } = 512;

    /// <summary>The width of one attention head, <see cref="HiddenSize"/> / <see cref="NumAttentionHeads"/>.</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>The number of patches along one side of the image, <see cref="ImageSize"/> / <see cref="PatchSize"/>.</summary>
    public int PatchesPerSide => ImageSize / PatchSize;

    /// <summary>The number of tokens per image: one class token plus one per patch.</summary>
    public int NumPositions => PatchesPerSide * PatchesPerSide + 1;

    /// <summary>Checks every value and throws an exception that names the first bad key.</summary>
    /// <returns>This configuration, for chaining.</returns>
    /// <exception cref="ArgumentException">A value is out of range or inconsistent with another.</exception>
    public ClipVisionConfig Validate()
    {
        ClipConfigJson.RequirePositive(HiddenSize, "hidden_size");
        ClipConfigJson.RequirePositive(IntermediateSize, "intermediate_size");
        ClipConfigJson.RequirePositive(NumHiddenLayers, "num_hidden_layers");
        ClipConfigJson.RequirePositive(NumAttentionHeads, "num_attention_heads");
        ClipConfigJson.RequirePositive(ImageSize, "image_size");
        ClipConfigJson.RequirePositive(PatchSize, "patch_size");
        ClipConfigJson.RequirePositive(NumChannels, "num_channels");
        ClipConfigJson.RequirePositive(ProjectionDim, "projection_dim");
        if (HiddenSize % NumAttentionHeads != 0)
        {
            throw new ArgumentException(
                $"hidden_size ({HiddenSize}) is not divisible by num_attention_heads ({NumAttentionHeads}).", "hidden_size");
        }

        if (ImageSize % PatchSize != 0)
        {
            throw new ArgumentException($"image_size ({ImageSize}) is not divisible by patch_size ({PatchSize}).", "image_size");
        }

        long patchesPerSide = ImageSize / PatchSize;
        if (patchesPerSide * patchesPerSide + 1 > MaxPositions)
        {
            throw new ArgumentException(
                $"image_size ({ImageSize}) / patch_size ({PatchSize}) gives {patchesPerSide}² + 1 = {patchesPerSide * patchesPerSide + 1} positions, more than {MaxPositions}.",
                "image_size");
        }

        ClipConfigJson.RequireActivation(HiddenAct, "hidden_act");
        ClipConfigJson.RequireEps(LayerNormEps, "layer_norm_eps");
        return this;
    }

    /// <summary>
    /// Parses the JSON of an HF <c>config.json</c>: either a <c>CLIPVisionConfig</c> or a full <c>CLIPModel</c> config whose
    /// vision keys are nested under <c>vision_config</c> (its top-level <c>projection_dim</c> then wins). Missing keys take
    /// their defaults; the result is validated.
    /// </summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The validated configuration.</returns>
    /// <exception cref="FormatException">The text is not a JSON object or a key has the wrong type.</exception>
    /// <exception cref="ArgumentException">A value is out of range.</exception>
    public static ClipVisionConfig FromJson(string json)
    {
        var top = ClipConfigJson.ParseObject(json);
        var modelType = ClipConfigJson.ReadModelType(top, "model_type");
        if (modelType is not (null or "clip" or "clip_vision_model"))
        {
            throw new FormatException(modelType == "clip_text_model"
                ? "The CLIP config has model_type 'clip_text_model': it describes a CLIP text tower, not a vision tower."
                : $"The config has model_type '{modelType}', which is not a CLIP model (expected 'clip' or 'clip_vision_model').");
        }

        var vision = ClipConfigJson.Nested(top, "vision_config") ?? top;
        if (!ReferenceEquals(vision, top))
        {
            var visionType = ClipConfigJson.ReadModelType(vision, "vision_config.model_type");
            if (visionType is not (null or "clip_vision_model"))
            {
                throw new FormatException($"The CLIP config's vision_config has model_type '{visionType}', expected 'clip_vision_model'.");
            }
        }

        return Parse(vision, ReferenceEquals(vision, top) ? null : top);
    }

    /// <summary>Parses the vision keys of <paramref name="vision"/>; a full CLIP config's top-level <c>projection_dim</c> wins.</summary>
    internal static ClipVisionConfig Parse(JsonObject vision, JsonObject? top)
    {
        var defaults = new ClipVisionConfig();
        int projectionDim = ClipConfigJson.ReadInt(vision, "projection_dim", defaults.ProjectionDim);
        if (top is not null)
        {
            projectionDim = ClipConfigJson.ReadInt(top, "projection_dim", projectionDim);
        }

        var config = new ClipVisionConfig
        {
            HiddenSize = ClipConfigJson.ReadInt(vision, "hidden_size", defaults.HiddenSize),
            IntermediateSize = ClipConfigJson.ReadInt(vision, "intermediate_size", defaults.IntermediateSize),
            NumHiddenLayers = ClipConfigJson.ReadInt(vision, "num_hidden_layers", defaults.NumHiddenLayers),
            NumAttentionHeads = ClipConfigJson.ReadInt(vision, "num_attention_heads", defaults.NumAttentionHeads),
            ImageSize = ClipConfigJson.ReadInt(vision, "image_size", defaults.ImageSize),
            PatchSize = ClipConfigJson.ReadInt(vision, "patch_size", defaults.PatchSize),
            NumChannels = ClipConfigJson.ReadInt(vision, "num_channels", defaults.NumChannels),
            HiddenAct = ClipConfigJson.ReadActivation(vision, defaults.HiddenAct),
            LayerNormEps = ClipConfigJson.ReadDouble(vision, "layer_norm_eps", defaults.LayerNormEps),
            ProjectionDim = projectionDim,
        };
        return config.Validate();
    }

    /// <summary>Reads and parses a <c>config.json</c> file (see <see cref="FromJson"/>).</summary>
    /// <param name="path">The path of the file.</param>
    /// <returns>The validated configuration.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="FormatException">The file is not a valid CLIP config; the message names the file.</exception>
    public static ClipVisionConfig FromFile(string path) => ClipConfigJson.FromFile(path, FromJson);

    /// <summary>
    /// Writes an HF-compatible <c>config.json</c> of a <c>CLIPVisionModel</c> (or <c>CLIPVisionModelWithProjection</c>).
    /// </summary>
    /// <param name="withProjection">Whether the model has a <c>visual_projection</c> (sets <c>architectures</c>).</param>
    /// <returns>The indented JSON text.</returns>
    public string ToJson(bool withProjection = false) =>
        ClipConfigJson.WithArchitecture(withProjection ? "CLIPVisionModelWithProjection" : "CLIPVisionModel", ToJsonObject());

    /// <summary>The vision keys as written in a flat config or under a full config's <c>vision_config</c>.</summary>
    internal JsonObject ToJsonObject()
    {
        Validate();
        return new JsonObject
        {
            ["model_type"] = "clip_vision_model",
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["image_size"] = ImageSize,
            ["patch_size"] = PatchSize,
            ["num_channels"] = NumChannels,
            ["hidden_act"] = ClipConfigJson.ActivationName(HiddenAct),
            ["layer_norm_eps"] = LayerNormEps,
            ["projection_dim"] = ProjectionDim,
            ["attention_dropout"] = 0.0,
            ["torch_dtype"] = "float32",
        };
    }

    /// <summary>
    /// The tensors a <see cref="ClipVisionModel"/> of this configuration holds, by state-dict key, with their shapes and
    /// the config keys that set them, layer by layer (lazily, so that a huge <c>num_hidden_layers</c> costs nothing
    /// before the first missing layer is found).
    /// </summary>
    internal IEnumerable<(string Name, long[] Shape, string Keys)> ExpectedTensors(bool withProjection)
    {
        long d = HiddenSize, f = IntermediateSize;
        const string E = "vision_model.embeddings.";
        yield return (E + "class_embedding", [d], "hidden_size");
        yield return (E + "patch_embedding.weight", [d, NumChannels, PatchSize, PatchSize], "hidden_size, num_channels, patch_size");
        yield return (E + "position_embedding.weight", [(long)PatchesPerSide * PatchesPerSide + 1, d], "image_size, patch_size, hidden_size");
        yield return ("vision_model.pre_layrnorm.weight", [d], "hidden_size");
        yield return ("vision_model.pre_layrnorm.bias", [d], "hidden_size");
        for (var i = 0; i < NumHiddenLayers; i++)
        {
            var l = string.Create(CultureInfo.InvariantCulture, $"vision_model.encoder.layers.{i}.");
            foreach (var proj in new[] { "k_proj", "v_proj", "q_proj", "out_proj" })
            {
                yield return (l + "self_attn." + proj + ".weight", [d, d], "hidden_size");
                yield return (l + "self_attn." + proj + ".bias", [d], "hidden_size");
            }
            yield return (l + "layer_norm1.weight", [d], "hidden_size");
            yield return (l + "layer_norm1.bias", [d], "hidden_size");
            yield return (l + "mlp.fc1.weight", [f, d], "intermediate_size, hidden_size");
            yield return (l + "mlp.fc1.bias", [f], "intermediate_size");
            yield return (l + "mlp.fc2.weight", [d, f], "hidden_size, intermediate_size");
            yield return (l + "mlp.fc2.bias", [d], "hidden_size");
            yield return (l + "layer_norm2.weight", [d], "hidden_size");
            yield return (l + "layer_norm2.bias", [d], "hidden_size");
        }
        yield return ("vision_model.post_layernorm.weight", [d], "hidden_size");
        yield return ("vision_model.post_layernorm.bias", [d], "hidden_size");
        if (withProjection)
        {
            yield return ("visual_projection.weight", [ProjectionDim, d], "projection_dim, hidden_size");
        }
    }
}
