using System.Text.Json.Nodes;

namespace WeightEnsembling.Clip;

/// <summary>
/// The architecture of a full CLIP model (both towers and the projections), mirroring Hugging Face's <c>CLIPConfig</c>:
/// <c>text_config</c>, <c>vision_config</c>, <c>projection_dim</c> and <c>logit_scale_init_value</c>. As in
/// <c>CLIPModel</c>, the top-level <c>projection_dim</c> is the width of both projections: <see cref="FromJson"/> copies
/// it into both tower configs and <see cref="Validate"/> requires them to agree.
/// </summary>
public sealed record ClipConfig
{
    /// <summary>The text tower (<c>text_config</c>). The default value is <c>new ClipTextConfig()</c>.</summary>
    public ClipTextConfig TextConfig { get; init; } = new();

    /// <summary>The vision tower (<c>vision_config</c>). The default value is <c>new ClipVisionConfig()</c>.</summary>
    public ClipVisionConfig VisionConfig { get; init; } = new();

    /// <summary>The width of the joint embedding space (<c>projection_dim</c>). The default value is 512.</summary>
    public int ProjectionDim { get; init; } = 512;

    /// <summary>
    /// The initial value of <c>logit_scale</c>, the logarithm of the similarity multiplier
    /// (<c>logit_scale_init_value</c>; ln(1/0.07)). The default value is 2.6592.
    /// </summary>
    public double LogitScaleInitValue { get; init; } = 2.6592;

    /// <summary>Checks both tower configs and the shared values; the exception names the first bad key.</summary>
    /// <returns>This configuration, for chaining.</returns>
    /// <exception cref="ArgumentException">A value is out of range or the projection widths disagree.</exception>
    public ClipConfig Validate()
    {
        if (TextConfig is null)
        {
            throw new ArgumentException("text_config must be set.", "text_config");
        }

        if (VisionConfig is null)
        {
            throw new ArgumentException("vision_config must be set.", "vision_config");
        }

        ClipConfigJson.RequirePositive(ProjectionDim, "projection_dim");
        if (!double.IsFinite(LogitScaleInitValue))
        {
            throw new ArgumentException($"logit_scale_init_value must be finite, got {LogitScaleInitValue}.", "logit_scale_init_value");
        }

        try
        {
            TextConfig.Validate();
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"text_config: {e.Message}", $"text_config.{e.ParamName}", e);
        }

        try
        {
            VisionConfig.Validate();
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"vision_config: {e.Message}", $"vision_config.{e.ParamName}", e);
        }

        if (TextConfig.ProjectionDim != ProjectionDim || VisionConfig.ProjectionDim != ProjectionDim)
        {
            throw new ArgumentException(
                $"projection_dim ({ProjectionDim}) must equal text_config.projection_dim ({TextConfig.ProjectionDim}) and "
                + $"vision_config.projection_dim ({VisionConfig.ProjectionDim}).",
                "projection_dim");
        }

        return this;
    }

    /// <summary>
    /// A full configuration built from two tower configs; the top-level <paramref name="projectionDim"/> is copied into
    /// both (as transformers' <c>CLIPModel</c> uses it for both projections).
    /// </summary>
    /// <param name="textConfig">The text tower.</param>
    /// <param name="visionConfig">The vision tower.</param>
    /// <param name="projectionDim">The width of the joint embedding space.</param>
    /// <param name="logitScaleInitValue">The initial <c>logit_scale</c>.</param>
    /// <returns>The validated configuration.</returns>
    public static ClipConfig Create(ClipTextConfig textConfig, ClipVisionConfig visionConfig, int projectionDim = 512, double logitScaleInitValue = 2.6592)
    {
        ArgumentNullException.ThrowIfNull(textConfig);
        ArgumentNullException.ThrowIfNull(visionConfig);
        return new ClipConfig
        {
            TextConfig = textConfig with { ProjectionDim = projectionDim },
            VisionConfig = visionConfig with { ProjectionDim = projectionDim },
            ProjectionDim = projectionDim,
            LogitScaleInitValue = logitScaleInitValue,
        }.Validate();
    }

    /// <summary>
    /// Parses the JSON of a full <c>CLIPModel</c> <c>config.json</c>. <c>text_config</c> and <c>vision_config</c> are
    /// required; keys missing inside them take Hugging Face's defaults (recent transformers versions write only the values
    /// that differ from the defaults). The top-level <c>projection_dim</c> (default 512) is used for both towers.
    /// </summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The validated configuration.</returns>
    /// <exception cref="FormatException">The text is not a JSON object, a key has the wrong type, or <c>text_config</c> or <c>vision_config</c> is missing.</exception>
    /// <exception cref="ArgumentException">A value is out of range; the message names the key.</exception>
    public static ClipConfig FromJson(string json) => Parse(ClipConfigJson.ParseObject(json), out _);

    /// <summary>Reads and parses a full CLIP <c>config.json</c> file (see <see cref="FromJson"/>).</summary>
    /// <param name="path">The path of the file.</param>
    /// <returns>The validated configuration.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="FormatException">The file is not a valid full CLIP config; the message names the file.</exception>
    /// <exception cref="ArgumentException">A value is out of range; the message names the file and the key.</exception>
    public static ClipConfig FromFile(string path) => ClipConfigJson.FromFile(path, FromJson);

    /// <summary>Writes an HF-compatible <c>config.json</c> of a <c>CLIPModel</c>.</summary>
    /// <returns>The indented JSON text.</returns>
    public string ToJson()
    {
        Validate();
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray("CLIPModel"),
            ["model_type"] = "clip",
            ["projection_dim"] = ProjectionDim,
            ["logit_scale_init_value"] = LogitScaleInitValue,
            ["text_config"] = TextConfig.ToJsonObject(),
            ["vision_config"] = VisionConfig.ToJsonObject(),
            ["torch_dtype"] = "float32",
        };
        return json.ToJsonString(ClipConfigJson.WriteOptions);
    }

    /// <summary>Parses a full config and lists the text architecture keys that took their defaults.</summary>
    internal static ClipConfig Parse(JsonObject top, out IReadOnlyList<string> textDefaultedKeys)
    {
        var text = ClipConfigJson.Nested(top, "text_config")
            ?? throw new FormatException("The CLIP config has no 'text_config'; a full CLIPModel config needs 'text_config' and 'vision_config'.");
        var vision = ClipConfigJson.Nested(top, "vision_config")
            ?? throw new FormatException("The CLIP config has no 'vision_config'; a full CLIPModel config needs 'text_config' and 'vision_config'.");
        int projectionDim = ClipConfigJson.ReadInt(top, "projection_dim", 512);
        var merged = new JsonObject { ["projection_dim"] = projectionDim };
        ClipTextConfig textConfig;
        ClipVisionConfig visionConfig;
        try
        {
            textConfig = ClipTextConfig.Parse(text, merged, out textDefaultedKeys);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"text_config: {e.Message}", $"text_config.{e.ParamName}", e);
        }

        try
        {
            visionConfig = ClipVisionConfig.Parse(vision, merged);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"vision_config: {e.Message}", $"vision_config.{e.ParamName}", e);
        }

        return new ClipConfig
        {
            TextConfig = textConfig,
            VisionConfig = visionConfig,
            ProjectionDim = projectionDim,
            LogitScaleInitValue = ClipConfigJson.ReadDouble(top, "logit_scale_init_value", 2.6592),
        }.Validate();
    }
}
