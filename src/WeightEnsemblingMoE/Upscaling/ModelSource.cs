using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Upscaling;

/// <summary>
/// Where the weights of one CLIP vision model come from: a model in memory, or a Hugging Face folder read lazily, one
/// tensor at a time, so that an upscaler never holds more than one expert tensor beyond what the result needs.
/// </summary>
internal sealed class ModelSource : IDisposable
{
    private readonly Dictionary<string, Tensor>? parameters;
    private readonly SafeTensorsCheckpoint? checkpoint;

    private ModelSource(string description, ClipVisionConfig config, ClipVisionModel? model, SafeTensorsCheckpoint? checkpoint)
    {
        Description = description;
        Config = config;
        this.checkpoint = checkpoint;
        parameters = model?.state_dict();
        HasProjection = model?.HasProjection ?? checkpoint!.Contains("visual_projection.weight");
    }

    /// <summary>Whether the model has a visual projection.</summary>
    public bool HasProjection { get; }

    /// <summary>How messages name this model.</summary>
    public string Description { get; }

    /// <summary>The model's configuration.</summary>
    public ClipVisionConfig Config { get; }

    /// <summary>Wraps a model in memory; the source never disposes it.</summary>
    public static ModelSource FromModel(ClipVisionModel model, string description) =>
        new(description, model.Config, model, null);

    /// <summary>Opens a Hugging Face folder (config.json plus model.safetensors or a sharded index) without reading the weights.</summary>
    public static ModelSource FromFolder(string folder, string description)
    {
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"{description}: the model folder '{folder}' does not exist.");
        }

        var config = ClipVisionConfig.FromFile(Path.Combine(folder, "config.json"));
        var checkpoint = SafeTensorsCheckpoint.Open(folder);
        return new ModelSource($"{description} ('{folder}')", config, null, checkpoint);
    }

    /// <summary>Whether the model has the tensor <paramref name="name"/> (a state-dict key).</summary>
    public bool Contains(string name) => parameters?.ContainsKey(name) ?? checkpoint!.Contains(name);

    /// <summary>The shape of the tensor <paramref name="name"/>, without reading it.</summary>
    public long[] ShapeOf(string name) => parameters is not null ? parameters[name].shape : checkpoint!.GetInfo(name).Shape;

    /// <summary>
    /// The tensor <paramref name="name"/> as float32, checked to be finite. The caller disposes the returned handle (for a
    /// model in memory it is a detached view of the parameter, so disposing it leaves the model intact).
    /// </summary>
    public Tensor Load(string name)
    {
        Tensor tensor = parameters is not null ? parameters[name].detach() : checkpoint!.Load(name);
        if (!tensor.is_floating_point())
        {
            tensor.Dispose();
            throw new InvalidDataException($"{Description}: tensor '{name}' is not floating-point.");
        }

        if (!tensor.isfinite().all().item<bool>())
        {
            tensor.Dispose();
            throw new InvalidDataException($"{Description}: tensor '{name}' contains NaN or Inf.");
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

    /// <inheritdoc />
    public override string ToString() => Description;
}
