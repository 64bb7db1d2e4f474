using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// A CLIP text tower with the module structure and parameter names of Hugging Face's <c>CLIPTextModel</c>
/// (<c>text_model.*</c>) plus, optionally, the <c>text_projection</c> of <c>CLIPModel</c> /
/// <c>CLIPTextModelWithProjection</c> (no bias), so that its state dict matches those checkpoints key for key.
/// </summary>
public sealed class ClipTextModel : nn.Module<Tensor, ClipTextOutput>
{
    private readonly ClipTextTransformer text_model;
    private readonly Linear? text_projection;

    /// <summary>Creates a model of the given architecture with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    /// <param name="withProjection">Whether to add <c>text_projection</c> (hidden_size → projection_dim, no bias).</param>
    public ClipTextModel(ClipTextConfig config, bool withProjection = true) : base(nameof(ClipTextModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        text_model = new ClipTextTransformer(config);
        text_projection = withProjection ? nn.Linear(config.HiddenSize, config.ProjectionDim, hasBias: false) : null;
        RegisterComponents();
    }

    /// <summary>A model over existing modules (shared with a <see cref="ClipModel"/>, which owns them).</summary>
    internal ClipTextModel(ClipTextConfig config, ClipTextTransformer textModel, Linear textProjection) : base(nameof(ClipTextModel))
    {
        Config = config;
        text_model = textModel;
        text_projection = textProjection;
        RegisterComponents();
    }

    /// <summary>The architecture.</summary>
    public ClipTextConfig Config { get; }

    /// <summary>The text transformer (<c>text_model</c>).</summary>
    public ClipTextTransformer TextModel => text_model;

    /// <summary>The projection to the joint image-text space (<c>text_projection</c>), or null if the model has none.</summary>
    public Linear? TextProjection => text_projection;

    /// <summary>Whether the model has a <c>text_projection</c>.</summary>
    public bool HasProjection => text_projection is not null;

    /// <summary>The encoder layers, in order (shortcut for <c>TextModel.Encoder.Layers</c>).</summary>
    public IReadOnlyList<ClipEncoderLayer> Layers => text_model.Encoder.Layers;

    /// <summary>Runs the model on a batch of token ids with the causal mask only.</summary>
    /// <param name="input">Token ids, an integer tensor [B, N], N ≤ <c>max_position_embeddings</c>.</param>
    /// <returns>The last hidden state, the pooled output and (with a projection) the text embeddings.</returns>
    public override ClipTextOutput forward(Tensor input) => forward(input, null);

    /// <summary>Runs the model on a batch of token ids with the causal mask and an optional padding mask.</summary>
    /// <param name="inputIds">Token ids, an integer tensor [B, N], N ≤ <c>max_position_embeddings</c>.</param>
    /// <param name="attentionMask">HF's <c>attention_mask</c> [B, N] (1 = token, 0 = padding), or null.</param>
    /// <returns>The last hidden state, the pooled output and (with a projection) the text embeddings.</returns>
    /// <exception cref="ArgumentException">The ids or the mask have the wrong dtype, shape or values.</exception>
    public ClipTextOutput forward(Tensor inputIds, Tensor? attentionMask)
    {
        using var scope = torch.NewDisposeScope();
        var output = text_model.forward(inputIds, attentionMask);
        var embeds = text_projection?.forward(output.PooledOutput);
        return new ClipTextOutput(
            output.LastHiddenState.MoveToOuterDisposeScope(),
            output.PooledOutput.MoveToOuterDisposeScope(),
            embeds?.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The text features used for zero-shot classification: the projected pooled output (HF <c>get_text_features</c>)
    /// when the model has a <c>text_projection</c>, otherwise the pooled output. Not normalised.
    /// </summary>
    /// <param name="inputIds">Token ids, an integer tensor [B, N], N ≤ <c>max_position_embeddings</c>.</param>
    /// <param name="attentionMask">HF's <c>attention_mask</c> [B, N] (1 = token, 0 = padding), or null.</param>
    /// <returns>Shape [B, projection_dim] (or [B, hidden_size] without a projection).</returns>
    public Tensor GetTextFeatures(Tensor inputIds, Tensor? attentionMask = null)
    {
        using var scope = torch.NewDisposeScope();
        var output = forward(inputIds, attentionMask);
        var features = output.TextEmbeds ?? output.PooledOutput;
        return features.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Loads a Hugging Face model folder: <c>config.json</c> plus <c>model.safetensors</c> or a sharded
    /// <c>model.safetensors.index.json</c>. Accepts a <c>CLIPTextModel</c>, a <c>CLIPTextModelWithProjection</c> and a
    /// full <c>CLIPModel</c> checkpoint (its <c>text_config</c>): <c>text_model.*</c> and <c>text_projection.*</c> are
    /// loaded (the projection exists exactly when the checkpoint has <c>text_projection.weight</c>);
    /// <c>vision_model.*</c>, <c>visual_projection.*</c>, <c>logit_scale</c> and a persisted <c>position_ids</c> are
    /// skipped. Weights of another floating dtype are converted to float32.
    /// </summary>
    /// <param name="folder">The model folder.</param>
    /// <returns>The loaded model (float32, on the CPU); the caller owns it.</returns>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">The config, the weights or a shard are missing.</exception>
    /// <exception cref="FormatException">The config is not valid JSON or a key has the wrong type.</exception>
    /// <exception cref="ArgumentException">A config value is out of range; the message names the key.</exception>
    /// <exception cref="SafeTensorsFormatException">A weights file or the index is corrupt.</exception>
    /// <exception cref="InvalidDataException">
    /// A tensor is missing, unexpected, of the wrong shape or not finite; the message names the tensor, the file and the
    /// config values that decide the shapes.
    /// </exception>
    public static ClipTextModel FromPretrained(string folder)
    {
        ClipCheckpointIO.RequireFolder(folder);
        string configPath = Path.Combine(folder, ClipCheckpointIO.ConfigFileName);
        IReadOnlyList<string> defaulted = [];
        var config = ClipConfigJson.FromFile(configPath, json => ClipTextConfig.Parse(ClipConfigJson.ParseObject(json), out defaulted));
        using var checkpoint = SafeTensorsCheckpoint.Open(folder);
        var model = new ClipTextModel(config, checkpoint.Contains("text_projection.weight"));
        try
        {
            ClipCheckpointIO.LoadInto(model, checkpoint, folder, IsSkipped, "CLIP text model", $"text config: {config.DescribeShapes(defaulted)}");
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Saves the model as a Hugging Face folder: <c>config.json</c> (a <c>CLIPTextModel</c> or
    /// <c>CLIPTextModelWithProjection</c> config) and <c>model.safetensors</c> (float32 as held), each written atomically.
    /// <see cref="FromPretrained"/> reads it back.
    /// </summary>
    /// <param name="folder">The folder (created if missing); existing files of the same names are replaced.</param>
    public void SaveTo(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ClipCheckpointIO.Save(this, folder, Config.ToJson(HasProjection));
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
        ClipCheckpointIO.Save(this, folder, Config.ToJson(HasProjection), dtype);
    }

    private static bool IsSkipped(string name) =>
        name.StartsWith("vision_model.", StringComparison.Ordinal)
        || name.StartsWith("visual_projection.", StringComparison.Ordinal)
        || name == "logit_scale"
        || name == "text_model.embeddings.position_ids";
}
