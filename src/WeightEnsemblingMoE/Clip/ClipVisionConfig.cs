using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace WeightEnsembling.Clip;

/// <summary>
/// The architecture of a CLIP vision tower, mirroring Hugging Face's <c>CLIPVisionConfig</c>. It reads and writes the
/// <c>config.json</c> of a <c>CLIPVisionModel</c> checkpoint and reads the nested <c>vision_config</c> of a full
/// <c>CLIPModel</c> checkpoint. The defaults are those of ViT-B/32.
/// </summary>
public sealed record ClipVisionConfig
{
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

    /// <summary>The most token positions (patches + 1) a configuration may have, so that no count overflows a 32-bit integer.</summary>
    private const long MaxPositions = int.MaxValue;

    /// <summary>The largest <c>config.json</c> read (a real one has a few kilobytes).</summary>
    private const long MaxConfigBytes = 16 << 20;

    /// <summary>Checks every value and throws an exception that names the first bad key.</summary>
    /// <returns>This configuration, for chaining.</returns>
    /// <exception cref="ArgumentException">A value is out of range or inconsistent with another.</exception>
    public ClipVisionConfig Validate()
    {
        RequirePositive(HiddenSize, "hidden_size");
        RequirePositive(IntermediateSize, "intermediate_size");
        RequirePositive(NumHiddenLayers, "num_hidden_layers");
        RequirePositive(NumAttentionHeads, "num_attention_heads");
        RequirePositive(ImageSize, "image_size");
        RequirePositive(PatchSize, "patch_size");
        RequirePositive(NumChannels, "num_channels");
        RequirePositive(ProjectionDim, "projection_dim");
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

        if (!Enum.IsDefined(HiddenAct))
        {
            throw new ArgumentException($"hidden_act has the unknown value {(int)HiddenAct}.", "hidden_act");
        }

        if (!double.IsFinite(LayerNormEps) || LayerNormEps <= 0)
        {
            throw new ArgumentException($"layer_norm_eps must be a positive finite number, got {LayerNormEps}.", "layer_norm_eps");
        }

        return this;
    }

    /// <summary>
    /// Parses the JSON of an HF <c>config.json</c>: either a <c>CLIPVisionConfig</c> (<c>model_type</c>
    /// <c>clip_vision_model</c>) or a full <c>CLIPModel</c> config (<c>model_type</c> <c>clip</c>) whose vision keys are
    /// nested under <c>vision_config</c> (its top-level <c>projection_dim</c> then wins). A config without
    /// <c>model_type</c> is read as one of these; any other <c>model_type</c> (a CLIP text tower, a ViT, ...) is refused.
    /// Missing keys take their defaults; the result is validated.
    /// </summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The validated configuration.</returns>
    /// <exception cref="FormatException">The text is not a JSON object, an object has a key twice, a key has the wrong
    /// type, or <c>model_type</c> is not a CLIP vision model.</exception>
    /// <exception cref="ArgumentException">A value is out of range.</exception>
    public static ClipVisionConfig FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonNode? root;
        try
        {
            RejectDuplicateKeys(json);
            root = JsonNode.Parse(json);
        }
        catch (JsonException e)
        {
            throw new FormatException($"The CLIP config is not valid JSON: {e.Message}", e);
        }

        if (root is not JsonObject top)
        {
            throw new FormatException("The CLIP config must be a JSON object.");
        }

        var modelType = ReadModelType(top, "model_type");
        if (modelType is not (null or "clip" or "clip_vision_model"))
        {
            throw new FormatException(modelType == "clip_text_model"
                ? "The CLIP config has model_type 'clip_text_model': it describes a CLIP text tower, not a vision tower."
                : $"The config has model_type '{modelType}', which is not a CLIP model (expected 'clip' or 'clip_vision_model').");
        }

        JsonObject vision = top;
        if (top.TryGetPropertyValue("vision_config", out var nested))
        {
            vision = nested as JsonObject ?? throw new FormatException("The CLIP config key 'vision_config' must be a JSON object.");
            var visionType = ReadModelType(vision, "vision_config.model_type");
            if (visionType is not (null or "clip_vision_model"))
            {
                throw new FormatException($"The CLIP config's vision_config has model_type '{visionType}', expected 'clip_vision_model'.");
            }
        }

        var defaults = new ClipVisionConfig();
        int projectionDim = ReadInt(vision, "projection_dim", defaults.ProjectionDim);
        if (!ReferenceEquals(vision, top))
        {
            projectionDim = ReadInt(top, "projection_dim", projectionDim);
        }

        var config = new ClipVisionConfig
        {
            HiddenSize = ReadInt(vision, "hidden_size", defaults.HiddenSize),
            IntermediateSize = ReadInt(vision, "intermediate_size", defaults.IntermediateSize),
            NumHiddenLayers = ReadInt(vision, "num_hidden_layers", defaults.NumHiddenLayers),
            NumAttentionHeads = ReadInt(vision, "num_attention_heads", defaults.NumAttentionHeads),
            ImageSize = ReadInt(vision, "image_size", defaults.ImageSize),
            PatchSize = ReadInt(vision, "patch_size", defaults.PatchSize),
            NumChannels = ReadInt(vision, "num_channels", defaults.NumChannels),
            HiddenAct = ReadActivation(vision, defaults.HiddenAct),
            LayerNormEps = ReadDouble(vision, "layer_norm_eps", defaults.LayerNormEps),
            ProjectionDim = projectionDim,
        };
        return config.Validate();
    }

    /// <summary>Reads and parses a <c>config.json</c> file (see <see cref="FromJson"/>).</summary>
    /// <param name="path">The path of the file.</param>
    /// <returns>The validated configuration.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="FormatException">The file is not a valid CLIP config (not UTF-8, larger than 16 MiB, a key twice, ...); the message names the file.</exception>
    /// <exception cref="ArgumentException">A value is out of range; the message names the file and the key.</exception>
    public static ClipVisionConfig FromFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The CLIP config file '{path}' does not exist.", path);
        }

        try
        {
            var length = new FileInfo(path).Length;
            if (length > MaxConfigBytes)
            {
                throw new FormatException($"the file has {length} bytes; a CLIP config.json larger than {MaxConfigBytes} bytes is refused.");
            }
            string text;
            try
            {
                text = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetString(File.ReadAllBytes(path));
            }
            catch (DecoderFallbackException e)
            {
                throw new FormatException("the file is not valid UTF-8.", e);
            }
            return FromJson(text.StartsWith('\uFEFF') ? text[1..] : text);
        }
        catch (FormatException e)
        {
            throw new FormatException($"{path}: {e.Message}", e);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{path}: {e.Message}", e.ParamName, e);
        }
    }

    /// <summary>
    /// Writes an HF-compatible <c>config.json</c> of a <c>CLIPVisionModel</c> (or <c>CLIPVisionModelWithProjection</c>).
    /// </summary>
    /// <param name="withProjection">Whether the model has a <c>visual_projection</c> (sets <c>architectures</c>).</param>
    /// <returns>The indented JSON text.</returns>
    public string ToJson(bool withProjection = false)
    {
        Validate();
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(withProjection ? "CLIPVisionModelWithProjection" : "CLIPVisionModel"),
            ["model_type"] = "clip_vision_model",
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["image_size"] = ImageSize,
            ["patch_size"] = PatchSize,
            ["num_channels"] = NumChannels,
            ["hidden_act"] = ActivationName(HiddenAct),
            ["layer_norm_eps"] = LayerNormEps,
            ["projection_dim"] = ProjectionDim,
            ["attention_dropout"] = 0.0,
            ["torch_dtype"] = "float32",
        };
        return json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>The HF name of an activation (<c>quick_gelu</c> or <c>gelu</c>).</summary>
    internal static string ActivationName(ClipActivation activation) => activation switch
    {
        ClipActivation.QuickGelu => "quick_gelu",
        ClipActivation.Gelu => "gelu",
        _ => throw new ArgumentOutOfRangeException(nameof(activation), activation, "Unknown CLIP activation."),
    };

    /// <summary>
    /// Throws when an object of the JSON text has a key twice (System.Text.Json.Nodes would fail with "An item with the
    /// same key has already been added", naming no key) or a string holds a lone surrogate escape.
    /// </summary>
    private static void RejectDuplicateKeys(string json)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { MaxDepth = 64 });
        var scopes = new Stack<(string Path, HashSet<string> Keys)>();
        string? pendingKey = null;
        while (reader.Read())
        {
            switch (reader.TokenType)
            {
                case JsonTokenType.StartObject:
                    var path = scopes.Count == 0 ? "" : pendingKey is null ? scopes.Peek().Path + "[]" : Join(scopes.Peek().Path, pendingKey);
                    scopes.Push((path, new HashSet<string>(StringComparer.Ordinal)));
                    pendingKey = null;
                    break;
                case JsonTokenType.StartArray:
                    scopes.Push((scopes.Count == 0 ? "" : Join(scopes.Peek().Path, pendingKey ?? "[]"), new HashSet<string>(StringComparer.Ordinal)));
                    pendingKey = null;
                    break;
                case JsonTokenType.EndObject:
                case JsonTokenType.EndArray:
                    scopes.Pop();
                    pendingKey = null;
                    break;
                case JsonTokenType.PropertyName:
                    SafeTensors.StrictJson.CheckEscapes(ref reader);
                    pendingKey = reader.GetString()!;
                    if (!scopes.Peek().Keys.Add(pendingKey))
                    {
                        throw new FormatException($"The CLIP config has the key '{Join(scopes.Peek().Path, pendingKey)}' more than once.");
                    }
                    break;
                case JsonTokenType.String:
                    SafeTensors.StrictJson.CheckEscapes(ref reader);
                    pendingKey = null;
                    break;
                default:
                    pendingKey = null;
                    break;
            }
        }
    }

    private static string Join(string path, string key) => path.Length == 0 ? key : path + "." + key;

    private static string? ReadModelType(JsonObject json, string key)
    {
        var value = Value(json, "model_type");
        if (value is null)
        {
            return null;
        }
        if (value.GetValueKind() != JsonValueKind.String)
        {
            throw new FormatException($"The CLIP config key '{key}' must be a string, got {value.ToJsonString()}.");
        }
        return value.GetValue<string>();
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

    private static void RequirePositive(int value, string key)
    {
        if (value <= 0)
        {
            throw new ArgumentException($"{key} must be positive, got {value}.", key);
        }
    }

    private static JsonValue? Value(JsonObject json, string key)
    {
        if (!json.TryGetPropertyValue(key, out var node) || node is null)
        {
            return null;
        }

        return node as JsonValue ?? throw new FormatException($"The CLIP config key '{key}' must be a scalar, got {node.ToJsonString()}.");
    }

    private static int ReadInt(JsonObject json, string key, int fallback)
    {
        var value = Value(json, key);
        if (value is null)
        {
            return fallback;
        }

        if (value.GetValueKind() == JsonValueKind.Number && value.TryGetValue(out int result))
        {
            return result;
        }

        throw new FormatException($"The CLIP config key '{key}' must be an integer, got {value.ToJsonString()}.");
    }

    private static double ReadDouble(JsonObject json, string key, double fallback)
    {
        var value = Value(json, key);
        if (value is null)
        {
            return fallback;
        }

        if (value.GetValueKind() == JsonValueKind.Number && value.TryGetValue(out double result))
        {
            return result;
        }

        throw new FormatException($"The CLIP config key '{key}' must be a number, got {value.ToJsonString()}.");
    }

    private static ClipActivation ReadActivation(JsonObject json, ClipActivation fallback)
    {
        var value = Value(json, "hidden_act");
        if (value is null)
        {
            return fallback;
        }

        if (value.GetValueKind() != JsonValueKind.String)
        {
            throw new FormatException($"The CLIP config key 'hidden_act' must be a string, got {value.ToJsonString()}.");
        }

        string name = value.GetValue<string>();
        return name switch
        {
            "quick_gelu" => ClipActivation.QuickGelu,
            "gelu" => ClipActivation.Gelu,
            _ => throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture, $"hidden_act '{name}' is not supported; use 'quick_gelu' or 'gelu'."), "hidden_act"),
        };
    }
}
