using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Interop;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// A CLIP vision tower with the module structure and parameter names of Hugging Face's <c>CLIPVisionModel</c>
/// (<c>vision_model.*</c>) plus, optionally, the <c>visual_projection</c> of <c>CLIPModel</c> /
/// <c>CLIPVisionModelWithProjection</c>, so that its state dict matches those checkpoints key for key.
/// </summary>
public sealed class ClipVisionModel : nn.Module<Tensor, ClipVisionOutput>
{
    private readonly ClipVisionTransformer vision_model;
    private readonly Linear? visual_projection;

    /// <summary>Creates a model of the given architecture with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    /// <param name="withProjection">Whether to add <c>visual_projection</c> (hidden_size → projection_dim, no bias).</param>
    public ClipVisionModel(ClipVisionConfig config, bool withProjection = true) : base(nameof(ClipVisionModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        vision_model = new ClipVisionTransformer(config);
        visual_projection = withProjection ? nn.Linear(config.HiddenSize, config.ProjectionDim, hasBias: false) : null;
        RegisterComponents();
    }

    /// <summary>A model over existing modules (shared with a <see cref="ClipModel"/>, which owns them).</summary>
    internal ClipVisionModel(ClipVisionConfig config, ClipVisionTransformer visionModel, Linear visualProjection) : base(nameof(ClipVisionModel))
    {
        Config = config;
        vision_model = visionModel;
        visual_projection = visualProjection;
        RegisterComponents();
    }

    /// <summary>The architecture.</summary>
    public ClipVisionConfig Config { get; }

    /// <summary>The vision transformer (<c>vision_model</c>).</summary>
    public ClipVisionTransformer VisionModel => vision_model;

    /// <summary>The projection to the joint image-text space (<c>visual_projection</c>), or null if the model has none.</summary>
    public Linear? VisualProjection => visual_projection;

    /// <summary>Whether the model has a <c>visual_projection</c>.</summary>
    public bool HasProjection => visual_projection is not null;

    /// <summary>The encoder layers, in order (shortcut for <c>VisionModel.Encoder.Layers</c>).</summary>
    public IReadOnlyList<ClipEncoderLayer> Layers => vision_model.Encoder.Layers;

    /// <summary>Runs the model on a batch of images.</summary>
    /// <param name="input">Pixel values, shape [B, <c>num_channels</c>, <c>image_size</c>, <c>image_size</c>].</param>
    /// <returns>The last hidden state, the pooled output and (with a projection) the image embeddings.</returns>
    public override ClipVisionOutput forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        using var scope = torch.NewDisposeScope();
        var output = vision_model.forward(input);
        var embeds = visual_projection?.forward(output.PooledOutput);
        return new ClipVisionOutput(
            output.LastHiddenState.MoveToOuterDisposeScope(),
            output.PooledOutput.MoveToOuterDisposeScope(),
            embeds?.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The image features used for classification: the projected pooled output (HF <c>get_image_features</c>) when the
    /// model has a <c>visual_projection</c>, otherwise the pooled output.
    /// </summary>
    /// <param name="pixelValues">Pixel values, shape [B, <c>num_channels</c>, <c>image_size</c>, <c>image_size</c>].</param>
    /// <returns>Shape [B, projection_dim] (or [B, hidden_size] without a projection).</returns>
    public Tensor GetImageFeatures(Tensor pixelValues)
    {
        ArgumentNullException.ThrowIfNull(pixelValues);
        using var scope = torch.NewDisposeScope();
        var output = forward(pixelValues);
        var features = output.ImageEmbeds ?? output.PooledOutput;
        return features.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Loads a Hugging Face model folder: <c>config.json</c> plus <c>model.safetensors</c> or a sharded
    /// <c>model.safetensors.index.json</c>, or, when neither is present, <c>pytorch_model.bin</c> or a sharded
    /// <c>pytorch_model.bin.index.json</c> (read by <see cref="TorchCheckpointReader"/>: plain tensor data only). Accepts a <c>CLIPVisionModel</c>, a <c>CLIPVisionModelWithProjection</c> and a
    /// full <c>CLIPModel</c> checkpoint: <c>vision_model.*</c> and <c>visual_projection.*</c> are loaded (the projection
    /// exists exactly when the checkpoint has <c>visual_projection.weight</c>); <c>text_model.*</c>,
    /// <c>text_projection.*</c>, <c>logit_scale</c> and a persisted <c>position_ids</c> are skipped. Weights of another
    /// floating dtype are converted to float32. The vision tensors are read into memory at once before they are copied.
    /// </summary>
    /// <param name="folder">The model folder.</param>
    /// <returns>The loaded model (float32, on the CPU); the caller owns it.</returns>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">The config, the weights or a shard are missing.</exception>
    /// <exception cref="SafeTensorsFormatException">A weights file or the index is corrupt.</exception>
    /// <exception cref="TorchCheckpointFormatException">A <c>pytorch_model.bin</c> file is corrupt, legacy, or holds more than tensor data.</exception>
    /// <exception cref="FormatException">config.json is not a valid CLIP vision config (bad JSON, a key twice, a wrong type, a model_type other than CLIP); the message names the file.</exception>
    /// <exception cref="ArgumentException">A value of config.json is out of range; the message names the file and the key.</exception>
    /// <exception cref="InvalidDataException">A tensor is missing, unexpected, of the wrong shape, of a non-floating dtype
    /// or not finite; the message names the tensor and the file. Shapes and dtypes are checked against config.json from the
    /// checkpoint's headers before the model is allocated, so a config that does not fit the weights allocates nothing.</exception>
    public static ClipVisionModel FromPretrained(string folder)
    {
        ClipCheckpointIO.RequireFolder(folder);
        var config = ClipVisionConfig.FromFile(Path.Combine(folder, ClipCheckpointIO.ConfigFileName));
        if (!File.Exists(Path.Combine(folder, SafeTensorsWriter.SingleFileName))
            && !File.Exists(Path.Combine(folder, SafeTensorsWriter.IndexFileName))
            && TorchCheckpointReader.HasPyTorchWeights(folder))
        {
            var (tensors, source) = TorchCheckpointReader.ReadPyTorchFolder(folder);
            try
            {
                return Create(config, tensors.ContainsKey("visual_projection.weight"), tensors.Keys, name => tensors[name], source);
            }
            finally
            {
                foreach (var tensor in tensors.Values)
                {
                    tensor.Dispose();
                }
            }
        }

        using var checkpoint = SafeTensorsCheckpoint.Open(folder);
        var withProjection = checkpoint.Contains("visual_projection.weight");
        CheckAgainstHeaders(config, withProjection, checkpoint, folder, Path.Combine(folder, ClipCheckpointIO.ConfigFileName));
        string shards = checkpoint.ShardPaths.Count == 1 ? checkpoint.ShardPaths[0] : Path.GetFullPath(folder);
        return Create(config, withProjection, checkpoint.Names, checkpoint.Load, shards);
    }

    /// <summary>
    /// A new plain model of the given architecture holding <paramref name="weights"/> (every state-dict tensor, checked
    /// strictly: no key missing or unexpected, every shape equal), in evaluation mode: how merging methods turn merged
    /// weights into a model. The tensors are copied; the caller keeps owning them and owns the model.
    /// </summary>
    /// <param name="config">The architecture.</param>
    /// <param name="withProjection">Whether the model has <c>visual_projection</c>.</param>
    /// <param name="weights">The state dict.</param>
    /// <returns>The model.</returns>
    /// <exception cref="StateDictLoadException">A key is missing, unexpected or of the wrong shape.</exception>
    public static ClipVisionModel FromStateDict(ClipVisionConfig config, bool withProjection, IReadOnlyDictionary<string, Tensor> weights)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        var model = new ClipVisionModel(config, withProjection);
        try
        {
            StateDict.LoadInto(model, weights, strict: true);
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private static ClipVisionModel Create(ClipVisionConfig config, bool withProjection, IEnumerable<string> names, Func<string, Tensor> load, string source)
    {
        var model = new ClipVisionModel(config, withProjection);
        try
        {
            ClipCheckpointIO.LoadInto(model, names, load, source, IsSkipped, "CLIP vision model", hint: null);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Saves the model as a Hugging Face folder: <c>config.json</c> and <c>model.safetensors</c> (float32 as held). The
    /// folder is replaced as a whole (<c>docs/reliability.md</c>): both files are written and flushed to disk in a hidden
    /// sibling folder that is then swapped in, so a reader or a crash sees both files of the previous save or both of
    /// this one, never one of each. Checkpoint files of an earlier save (shards, an index) are removed; other files of the
    /// folder are kept. <see cref="FromPretrained"/> reads it back.
    /// </summary>
    /// <param name="folder">The folder (created if missing).</param>
    /// <exception cref="InvalidOperationException">A tensor has NaN or infinite values (nothing is written).</exception>
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
        name.StartsWith("text_model.", StringComparison.Ordinal)
        || name.StartsWith("text_projection.", StringComparison.Ordinal)
        || name == "logit_scale"
        || name == "vision_model.embeddings.position_ids";

    /// <summary>
    /// Checks every tensor the config implies against the checkpoint's headers (name, shape, a floating dtype TorchSharp
    /// has) before anything is allocated: the model's size is then bounded by the checkpoint's.
    /// </summary>
    private static void CheckAgainstHeaders(ClipVisionConfig config, bool withProjection, SafeTensorsCheckpoint checkpoint, string folder,
        string configPath)
    {
        string source = checkpoint.ShardPaths.Count == 1 ? checkpoint.ShardPaths[0] : Path.GetFullPath(folder);
        foreach (var (name, shape, keys) in config.ExpectedTensors(withProjection))
        {
            if (!checkpoint.Contains(name))
            {
                throw new InvalidDataException(
                    $"The checkpoint '{source}' has no tensor '{name}', which '{configPath}' implies ({keys}; num_hidden_layers = {config.NumHiddenLayers}).");
            }
            var info = checkpoint.GetInfo(name);
            if (!info.Shape.SequenceEqual(shape))
            {
                throw new InvalidDataException(
                    $"Tensor '{name}' in '{source}' has shape [{string.Join(", ", info.Shape)}], but '{configPath}' ({keys}) gives [{string.Join(", ", shape)}].");
            }
            if (SafeTensorsDTypes.ToScalarType(info.DType) is not (ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64))
            {
                throw new InvalidDataException($"Tensor '{name}' in '{source}' has dtype {info.DType}; a floating dtype TorchSharp supports is expected.");
            }
        }
    }
}
