using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// Maps the features of one task's images, shape [B, <see cref="InputDimension"/>], to class logits, shape
/// [B, <see cref="ClassCount"/>]. Heads are frozen when created (test-time adaptation does not train them). They are
/// stored as safetensors files whose <c>__metadata__</c> names their kind under <see cref="HeadKindKey"/>; see
/// <see cref="Load"/>.
/// </summary>
public abstract class TaskHead : nn.Module<Tensor, Tensor>
{
    /// <summary>The <c>__metadata__</c> key naming the kind of head a file holds (<c>linear</c> or <c>zero_shot</c>).</summary>
    public const string HeadKindKey = "head_kind";

    /// <summary>The <c>__metadata__</c> key holding the class names as a JSON array of strings.</summary>
    public const string ClassNamesKey = "class_names";

    /// <summary>Initialises the module name and class names.</summary>
    /// <param name="name">The module name.</param>
    /// <param name="classNames">The class names, or <see langword="null"/>; the derived constructor checks their count.</param>
    protected TaskHead(string name, IReadOnlyList<string>? classNames)
        : base(name)
    {
        ClassNames = classNames?.ToArray();
    }

    /// <summary>The number of classes (logits per example).</summary>
    public abstract int ClassCount { get; }

    /// <summary>The width of the features the head expects.</summary>
    public abstract int InputDimension { get; }

    /// <summary>The class names in logit order, or <see langword="null"/> when unknown.</summary>
    public IReadOnlyList<string>? ClassNames { get; }

    /// <summary>Whether no parameter of the head requires a gradient (true for a new or loaded head).</summary>
    public bool IsFrozen => parameters().All(p => !p.requires_grad);

    /// <summary>Freezes (or unfreezes) every parameter of the head.</summary>
    /// <param name="frozen"><see langword="true"/> to stop gradients, <see langword="false"/> to let the head train.</param>
    public void SetFrozen(bool frozen)
    {
        foreach (var parameter in parameters())
        {
            parameter.requires_grad = !frozen;
        }
    }

    /// <summary>Saves the head as a safetensors file (written atomically), with its kind and class names as metadata.</summary>
    /// <param name="path">The file path.</param>
    public abstract void Save(string path);

    /// <summary>Loads a head saved by <see cref="Save"/>, choosing the kind from the file's <see cref="HeadKindKey"/> metadata.</summary>
    /// <param name="path">The safetensors file.</param>
    /// <returns>A <see cref="LinearClassificationHead"/> or <see cref="ZeroShotClassificationHead"/>, frozen.</returns>
    /// <exception cref="InvalidDataException">The file names no or an unknown kind, lacks a tensor, or holds bad values; the message names the file.</exception>
    public static TaskHead Load(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        using var file = SafeTensorsFile.Open(path);
        if (!file.Metadata.TryGetValue(HeadKindKey, out string? kind))
        {
            throw new InvalidDataException($"Safetensors file '{path}' has no '{HeadKindKey}' metadata: it does not hold a task head.");
        }
        IReadOnlyList<string>? classNames = ReadClassNames(file, path);
        using var scope = NewDisposeScope();
        try
        {
            return kind switch
            {
                LinearClassificationHead.Kind => new LinearClassificationHead(Require(file, path, "weight"), Require(file, path, "bias"), classNames),
                ZeroShotClassificationHead.Kind => new ZeroShotClassificationHead(Require(file, path, "text_embeds"), Require(file, path, "logit_scale").to_type(ScalarType.Float64).item<double>(), classNames),
                _ => throw new InvalidDataException($"Safetensors file '{path}' holds head kind '{kind}'; expected '{LinearClassificationHead.Kind}' or '{ZeroShotClassificationHead.Kind}'."),
            };
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"Safetensors file '{path}' holds an invalid {kind} head: {e.Message}", e);
        }
    }

    /// <summary>Checks that <paramref name="features"/> is a [B, <see cref="InputDimension"/>] tensor of <paramref name="dtype"/>.</summary>
    /// <param name="features">The forward input.</param>
    /// <param name="dtype">The dtype of the head's parameters.</param>
    /// <exception cref="ArgumentException">The rank, width or dtype is wrong; the message names the features and the head.</exception>
    protected void CheckFeatures(Tensor features, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.dim() != 2 || features.shape[1] != InputDimension)
        {
            throw new ArgumentException($"Head '{GetName()}': features must have shape [B, {InputDimension}], got [{string.Join(", ", features.shape)}].", nameof(features));
        }
        if (features.dtype != dtype)
        {
            throw new ArgumentException($"Head '{GetName()}': features must be {dtype}, got {features.dtype}.", nameof(features));
        }
    }

    /// <summary>Wraps <paramref name="data"/> in a parameter that needs no gradient and belongs to no dispose scope.</summary>
    /// <param name="data">The parameter's values; the parameter takes them over.</param>
    /// <returns>The frozen parameter.</returns>
    protected static Parameter FrozenParameter(Tensor data)
    {
        ArgumentNullException.ThrowIfNull(data);
        var parameter = new Parameter(data, requires_grad: false);
        parameter.DetachFromDisposeScope();
        return parameter;
    }

    /// <summary>Checks that <see cref="ClassNames"/>, when given, has one name per class.</summary>
    /// <exception cref="ArgumentException">The count differs from <see cref="ClassCount"/>.</exception>
    protected void CheckClassNames()
    {
        if (ClassNames is not null && ClassNames.Count != ClassCount)
        {
            throw new ArgumentException($"Head '{GetName()}' has {ClassCount} classes but {ClassNames.Count} class names.", "classNames");
        }
    }

    /// <summary>Writes <paramref name="tensors"/> with this head's kind and class names as metadata.</summary>
    /// <param name="path">The file path.</param>
    /// <param name="kind">The value of <see cref="HeadKindKey"/>.</param>
    /// <param name="tensors">The tensors by name.</param>
    protected void SaveTensors(string path, string kind, IReadOnlyDictionary<string, Tensor> tensors)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var metadata = new Dictionary<string, string> { [HeadKindKey] = kind };
        if (ClassNames is not null)
        {
            metadata[ClassNamesKey] = JsonSerializer.Serialize(ClassNames);
        }
        SafeTensorsWriter.Save(path, tensors, metadata);
    }

    private static Tensor Require(SafeTensorsFile file, string path, string name)
    {
        if (!file.Contains(name))
        {
            throw new InvalidDataException($"Safetensors file '{path}' lacks tensor '{name}'.");
        }
        return file.Load(name);
    }

    private static string[]? ReadClassNames(SafeTensorsFile file, string path)
    {
        if (!file.Metadata.TryGetValue(ClassNamesKey, out string? json))
        {
            return null;
        }
        try
        {
            var names = JsonSerializer.Deserialize<string[]>(json);
            if (names is null || names.Any(n => n is null))
            {
                throw new JsonException("null entries");
            }
            return names;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Safetensors file '{path}' has '{ClassNamesKey}' metadata that is not a JSON array of strings.", e);
        }
    }
}
