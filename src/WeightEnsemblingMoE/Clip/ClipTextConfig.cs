using System.Text.Json.Nodes;

namespace WeightEnsembling.Clip;

/// <summary>
/// The architecture of a CLIP text tower, mirroring Hugging Face's <c>CLIPTextConfig</c>. It reads and writes the
/// <c>config.json</c> of a <c>CLIPTextModel</c> / <c>CLIPTextModelWithProjection</c> checkpoint and reads the nested
/// <c>text_config</c> of a full <c>CLIPModel</c> checkpoint. The defaults are those of <c>CLIPTextConfig</c> (ViT-B/32's
/// text tower); as in transformers, a key missing from a file takes its default, since recent transformers versions write
/// only the values that differ from the defaults.
/// </summary>
public sealed record ClipTextConfig
{
    /// <summary>The number of token ids (<c>vocab_size</c>). The default value is 49408.</summary>
    public int VocabSize { get; init; } = 49408;

    /// <summary>The width D of the transformer (<c>hidden_size</c>). The default value is 512.</summary>
    public int HiddenSize { get; init; } = 512;

    /// <summary>The width of the MLP hidden layer (<c>intermediate_size</c>). The default value is 2048.</summary>
    public int IntermediateSize { get; init; } = 2048;

    /// <summary>The number of encoder layers (<c>num_hidden_layers</c>). The default value is 12.</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary>The number of attention heads (<c>num_attention_heads</c>); must divide <see cref="HiddenSize"/>. The default value is 8.</summary>
    public int NumAttentionHeads { get; init; } = 8;

    /// <summary>The context length: the most tokens per text (<c>max_position_embeddings</c>). The default value is 77.</summary>
    public int MaxPositionEmbeddings { get; init; } = 77;

    /// <summary>The MLP activation (<c>hidden_act</c>). The default value is <see cref="ClipActivation.QuickGelu"/>.</summary>
    public ClipActivation HiddenAct { get; init; } = ClipActivation.QuickGelu;

    /// <summary>The epsilon of every layer norm (<c>layer_norm_eps</c>). The default value is 1e-5.</summary>
    public double LayerNormEps { get; init; } = 1e-5;

    /// <summary>The width of the text embedding after <c>text_projection</c> (<c>projection_dim</c>). The default value is 512.</summary>
    public int ProjectionDim { get; init; } = 512;

    /// <summary>The start-of-text token id (<c>bos_token_id</c>). The default value is 49406.</summary>
    public int BosTokenId { get; init; } = 49406;

    /// <summary>
    /// The end-of-text token id (<c>eos_token_id</c>), which selects the pooled token. The value 2 (written by old
    /// transformers versions, e.g. in OpenAI's checkpoints) selects the legacy rule: the position of the largest token id.
    /// The default value is 49407.
    /// </summary>
    public int EosTokenId { get; init; } = 49407;

    /// <summary>The padding token id (<c>pad_token_id</c>). The default value is 1.</summary>
    public int PadTokenId { get; init; } = 1;

    /// <summary>The width of one attention head, <see cref="HiddenSize"/> / <see cref="NumAttentionHeads"/>.</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>
    /// Whether the pooled output is taken at the largest token id (HF's legacy rule, used when <c>eos_token_id</c> is 2)
    /// rather than at the first occurrence of <see cref="EosTokenId"/>.
    /// </summary>
    public bool UsesLegacyEosPooling => EosTokenId == 2;

    /// <summary>Checks every value and throws an exception that names the first bad key.</summary>
    /// <returns>This configuration, for chaining.</returns>
    /// <exception cref="ArgumentException">A value is out of range or inconsistent with another.</exception>
    public ClipTextConfig Validate()
    {
        ClipConfigJson.RequirePositive(VocabSize, "vocab_size");
        ClipConfigJson.RequirePositive(HiddenSize, "hidden_size");
        ClipConfigJson.RequirePositive(IntermediateSize, "intermediate_size");
        ClipConfigJson.RequirePositive(NumHiddenLayers, "num_hidden_layers");
        ClipConfigJson.RequirePositive(NumAttentionHeads, "num_attention_heads");
        ClipConfigJson.RequirePositive(MaxPositionEmbeddings, "max_position_embeddings");
        ClipConfigJson.RequirePositive(ProjectionDim, "projection_dim");
        if (HiddenSize % NumAttentionHeads != 0)
        {
            throw new ArgumentException(
                $"hidden_size ({HiddenSize}) is not divisible by num_attention_heads ({NumAttentionHeads}).", "hidden_size");
        }

        ClipConfigJson.RequireActivation(HiddenAct, "hidden_act");
        ClipConfigJson.RequireEps(LayerNormEps, "layer_norm_eps");
        // Only eos_token_id is used by the model (it selects the pooled token); bos and pad are kept for the tokenizer.
        if (EosTokenId < 0 || EosTokenId >= VocabSize)
        {
            throw new ArgumentException($"eos_token_id ({EosTokenId}) must be a token id in [0, vocab_size = {VocabSize}).", "eos_token_id");
        }

        RequireNonNegative(BosTokenId, "bos_token_id");
        RequireNonNegative(PadTokenId, "pad_token_id");
        return this;
    }

    /// <summary>
    /// Parses the JSON of an HF <c>config.json</c>: either a <c>CLIPTextConfig</c> or a full <c>CLIPModel</c> config whose
    /// text keys are nested under <c>text_config</c> (its top-level <c>projection_dim</c> then wins). Missing keys take
    /// their defaults; the result is validated.
    /// </summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The validated configuration.</returns>
    /// <exception cref="FormatException">
    /// The text is not a JSON object, a key has the wrong type, a full CLIP config (one with <c>vision_config</c>) has no
    /// <c>text_config</c>, or the config is a vision tower's (<c>model_type</c> <c>clip_vision_model</c>).
    /// </exception>
    /// <exception cref="ArgumentException">A value is out of range; the message names the key.</exception>
    public static ClipTextConfig FromJson(string json) => Parse(ClipConfigJson.ParseObject(json), out _);

    /// <summary>Reads and parses a <c>config.json</c> file (see <see cref="FromJson"/>).</summary>
    /// <param name="path">The path of the file.</param>
    /// <returns>The validated configuration.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="FormatException">The file is not a valid CLIP config; the message names the file.</exception>
    /// <exception cref="ArgumentException">A value is out of range; the message names the file and the key.</exception>
    public static ClipTextConfig FromFile(string path) => ClipConfigJson.FromFile(path, FromJson);

    /// <summary>
    /// Writes an HF-compatible <c>config.json</c> of a <c>CLIPTextModel</c> (or <c>CLIPTextModelWithProjection</c>).
    /// </summary>
    /// <param name="withProjection">Whether the model has a <c>text_projection</c> (sets <c>architectures</c>).</param>
    /// <returns>The indented JSON text.</returns>
    public string ToJson(bool withProjection = false) =>
        ClipConfigJson.WithArchitecture(withProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel", ToJsonObject());

    /// <summary>The text keys as written in a flat config or under a full config's <c>text_config</c>.</summary>
    internal JsonObject ToJsonObject()
    {
        Validate();
        return new JsonObject
        {
            ["model_type"] = "clip_text_model",
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["hidden_act"] = ClipConfigJson.ActivationName(HiddenAct),
            ["layer_norm_eps"] = LayerNormEps,
            ["projection_dim"] = ProjectionDim,
            ["bos_token_id"] = BosTokenId,
            ["eos_token_id"] = EosTokenId,
            ["pad_token_id"] = PadTokenId,
            ["attention_dropout"] = 0.0,
            ["torch_dtype"] = "float32",
        };
    }

    /// <summary>
    /// Parses a flat text config, or the <c>text_config</c> of a full CLIP config, and lists the architecture keys that
    /// were absent and took their defaults (for error messages).
    /// </summary>
    internal static ClipTextConfig Parse(JsonObject top, out IReadOnlyList<string> defaultedKeys)
    {
        var text = ClipConfigJson.Nested(top, "text_config");
        if (text is null)
        {
            if (ClipConfigJson.Has(top, "vision_config"))
            {
                throw new FormatException("The CLIP config has a 'vision_config' but no 'text_config'; a full CLIPModel config needs both.");
            }

            if (top.TryGetPropertyValue("model_type", out var type) && type is JsonValue value
                && value.TryGetValue(out string? name) && name == "clip_vision_model")
            {
                throw new FormatException("The CLIP config is a vision tower's (model_type 'clip_vision_model'); a text config or a full CLIPModel config with 'text_config' is needed.");
            }

            text = top;
        }

        return Parse(text, ReferenceEquals(text, top) ? null : top, out defaultedKeys);
    }

    /// <summary>Parses the text keys of <paramref name="text"/>; a full CLIP config's top-level <c>projection_dim</c> wins.</summary>
    internal static ClipTextConfig Parse(JsonObject text, JsonObject? top, out IReadOnlyList<string> defaultedKeys)
    {
        var defaults = new ClipTextConfig();
        int projectionDim = ClipConfigJson.ReadInt(text, "projection_dim", defaults.ProjectionDim);
        if (top is not null)
        {
            projectionDim = ClipConfigJson.ReadInt(top, "projection_dim", projectionDim);
        }

        var config = new ClipTextConfig
        {
            VocabSize = ClipConfigJson.ReadInt(text, "vocab_size", defaults.VocabSize),
            HiddenSize = ClipConfigJson.ReadInt(text, "hidden_size", defaults.HiddenSize),
            IntermediateSize = ClipConfigJson.ReadInt(text, "intermediate_size", defaults.IntermediateSize),
            NumHiddenLayers = ClipConfigJson.ReadInt(text, "num_hidden_layers", defaults.NumHiddenLayers),
            NumAttentionHeads = ClipConfigJson.ReadInt(text, "num_attention_heads", defaults.NumAttentionHeads),
            MaxPositionEmbeddings = ClipConfigJson.ReadInt(text, "max_position_embeddings", defaults.MaxPositionEmbeddings),
            HiddenAct = ClipConfigJson.ReadActivation(text, defaults.HiddenAct),
            LayerNormEps = ClipConfigJson.ReadDouble(text, "layer_norm_eps", defaults.LayerNormEps),
            ProjectionDim = projectionDim,
            BosTokenId = ClipConfigJson.ReadInt(text, "bos_token_id", defaults.BosTokenId),
            EosTokenId = ClipConfigJson.ReadInt(text, "eos_token_id", defaults.EosTokenId),
            PadTokenId = ClipConfigJson.ReadInt(text, "pad_token_id", defaults.PadTokenId),
        };
        string[] shapeKeys =
        [
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "projection_dim",
        ];
        defaultedKeys = shapeKeys
            .Where(k => !ClipConfigJson.Has(text, k) && !(k == "projection_dim" && top is not null && ClipConfigJson.Has(top, k)))
            .ToList();
        return config.Validate();
    }

    /// <summary>A one-line summary of the values that decide the text tower's tensor shapes, for error messages.</summary>
    internal string DescribeShapes(IReadOnlyList<string> defaultedKeys)
    {
        string summary = $"vocab_size={VocabSize}, hidden_size={HiddenSize}, intermediate_size={IntermediateSize}, "
            + $"num_hidden_layers={NumHiddenLayers}, max_position_embeddings={MaxPositionEmbeddings}, projection_dim={ProjectionDim}";
        return defaultedKeys.Count == 0
            ? summary
            : $"{summary}; missing from config.json, so Hugging Face's defaults were used: {string.Join(", ", defaultedKeys)}";
    }

    private static void RequireNonNegative(int value, string key)
    {
        if (value < 0)
        {
            throw new ArgumentException($"{key} must be a non-negative token id, got {value}.", key);
        }
    }
}
