using WeightEnsembling.Clip;
using WeightEnsembling.Interop;
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
    private readonly bool pytorchWeights;
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
        else if (IsPyTorchFolder(folder!))
        {
            // pytorch_model.bin: the reader holds a whole file in memory, so the shapes are taken once here and the file is
            // read again, and released, by each read session.
            pytorchWeights = true;
            var (tensors, _) = TorchCheckpointReader.ReadPyTorchFolder(folder!);
            try
            {
                shapes = tensors.ToDictionary(p => p.Key, p => p.Value.shape, StringComparer.Ordinal);
                floating = tensors.ToDictionary(p => p.Key, p => p.Value.is_floating_point(), StringComparer.Ordinal);
            }
            finally
            {
                foreach (var tensor in tensors.Values)
                {
                    tensor.Dispose();
                }
            }
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

    /// <summary>
    /// Opens a Hugging Face folder (config.json plus model.safetensors or a sharded index: the config and the tensor headers
    /// are read now; or, without safetensors, pytorch_model.bin or its sharded index, read whole by each session).
    /// </summary>
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
    public Session Open()
    {
        if (folder is null)
        {
            return new(this, null, null);
        }

        return pytorchWeights ? new(this, null, TorchCheckpointReader.ReadPyTorchFolder(folder).Tensors) : new(this, SafeTensorsCheckpoint.Open(folder), null);
    }

    private static bool IsPyTorchFolder(string folder) =>
        !File.Exists(Path.Combine(folder, SafeTensorsWriter.SingleFileName))
        && !File.Exists(Path.Combine(folder, SafeTensorsWriter.IndexFileName))
        && TorchCheckpointReader.HasPyTorchWeights(folder);

    /// <summary>A read session over one model.</summary>
    internal sealed class Session(ModelSource source, SafeTensorsCheckpoint? checkpoint, Dictionary<string, Tensor>? pickled) : IDisposable
    {
        /// <summary>
        /// The tensor <paramref name="name"/> as float32, checked to be finite. The caller disposes the returned handle (for
        /// a model in memory it is a detached view of the parameter, so disposing it leaves the model intact).
        /// </summary>
        public Tensor Load(string name)
        {
            Tensor tensor = source.parameters is not null ? source.parameters[name].detach()
                : pickled is not null ? pickled[name].detach()
                : checkpoint!.Load(name);
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
        public void Dispose()
        {
            checkpoint?.Dispose();
            foreach (var tensor in pickled?.Values ?? Enumerable.Empty<Tensor>())
            {
                // The handles returned by Load share storage with these and stay valid (libtorch counts references).
                tensor.Dispose();
            }
        }
    }
}
