using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Models;

/// <summary>
/// Where the weights of one CLIP vision model come from: a model in memory, or a Hugging Face folder read lazily, one
/// tensor at a time, so that an upscaler never holds more than one expert tensor beyond what the result needs. A folder's
/// files are mapped only while a read session is open (<see cref="Open"/>), so the pages of an expert that is done with
/// leave the process's resident memory.
/// </summary>
internal sealed class ModelSource
{
    private readonly Dictionary<string, Tensor>? parameters;
    private readonly string? folder;
    private readonly Dictionary<string, long[]> shapes;
    private readonly Dictionary<string, bool> floating;

    private ModelSource(string description, ClipVisionConfig config, ClipVisionModel? model, string? folder)
    {
        Description = description;
        Config = config;
        this.folder = folder;
        parameters = model?.state_dict();
        if (parameters is not null)
        {
            shapes = parameters.ToDictionary(p => p.Key, p => p.Value.shape, StringComparer.Ordinal);
            floating = parameters.ToDictionary(p => p.Key, p => p.Value.is_floating_point(), StringComparer.Ordinal);
        }
        else
        {
            using var checkpoint = SafeTensorsCheckpoint.Open(folder!);
            shapes = checkpoint.Names.ToDictionary(n => n, n => checkpoint.GetInfo(n).Shape, StringComparer.Ordinal);
            floating = checkpoint.Names.ToDictionary(
                n => n,
                n => checkpoint.GetInfo(n).DType is SafeTensorsDType.F64 or SafeTensorsDType.F32 or SafeTensorsDType.F16 or SafeTensorsDType.BF16,
                StringComparer.Ordinal);
        }

        HasProjection = shapes.ContainsKey("visual_projection.weight");
    }

    /// <summary>How messages name this model.</summary>
    public string Description { get; }

    /// <summary>The model's configuration.</summary>
    public ClipVisionConfig Config { get; }

    /// <summary>Whether the model has a visual projection.</summary>
    public bool HasProjection { get; }

    /// <summary>Wraps a model in memory; the source never disposes it.</summary>
    public static ModelSource FromModel(ClipVisionModel model, string description) =>
        new(description, model.Config, model, null);

    /// <summary>Opens a Hugging Face folder (config.json plus model.safetensors or a sharded index): reads the config and the tensor headers only.</summary>
    public static ModelSource FromFolder(string folder, string description)
    {
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"{description}: the model folder '{folder}' does not exist.");
        }

        var config = ClipVisionConfig.FromFile(Path.Combine(folder, "config.json"));
        return new ModelSource($"{description} ('{folder}')", config, null, folder);
    }

    /// <summary>Whether the model has the tensor <paramref name="name"/> (a state-dict key).</summary>
    public bool Contains(string name) => shapes.ContainsKey(name);

    /// <summary>The shape of the tensor <paramref name="name"/>, without reading it.</summary>
    public long[] ShapeOf(string name) => shapes[name];

    /// <summary>Whether the tensor <paramref name="name"/> is floating-point, without reading it.</summary>
    public bool IsFloatingPoint(string name) => floating[name];

    /// <summary>Opens a read session; dispose it when done with this model for a while.</summary>
    public Session Open() => new(this, folder is null ? null : SafeTensorsCheckpoint.Open(folder));

    /// <summary>A read session over one model.</summary>
    internal sealed class Session(ModelSource source, SafeTensorsCheckpoint? checkpoint) : IDisposable
    {
        /// <summary>
        /// The tensor <paramref name="name"/> as float32, checked to be finite. The caller disposes the returned handle (for
        /// a model in memory it is a detached view of the parameter, so disposing it leaves the model intact).
        /// </summary>
        public Tensor Load(string name)
        {
            Tensor tensor = source.parameters is not null ? source.parameters[name].detach() : checkpoint!.Load(name);
            if (!tensor.is_floating_point())
            {
                tensor.Dispose();
                throw new InvalidDataException($"{source.Description}: tensor '{name}' is not floating-point.");
            }

            if (!tensor.isfinite().all().item<bool>())
            {
                tensor.Dispose();
                throw new InvalidDataException($"{source.Description}: tensor '{name}' contains NaN or Inf.");
            }

            if (tensor.dtype != ScalarType.Float32)
            {
                var converted = tensor.to_type(ScalarType.Float32);
                tensor.Dispose();
                tensor = converted;
            }

            return tensor;
        }

        /// <inheritdoc />
        public void Dispose() => checkpoint?.Dispose();
    }
}
