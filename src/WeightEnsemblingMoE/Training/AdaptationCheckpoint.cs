using System.Globalization;
using TorchSharp;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// Checkpoints of test-time adaptation: a safetensors file holding only the trainable parameters (routers or merging
/// coefficients: kilobytes to a few megabytes) and, for resuming, the Adam moments (<c>optimizer.exp_avg.*</c>,
/// <c>optimizer.exp_avg_sq.*</c>), with <c>__metadata__</c> giving the format, method, step, options (JSON) and the
/// fingerprint of the frozen weights. Loading onto a model with other weights fails with a clear message.
/// </summary>
public static class AdaptationCheckpoint
{
    /// <summary>The metadata key and value that mark an adaptation checkpoint.</summary>
    public const string FormatKey = "format";

    /// <summary>The value of <see cref="FormatKey"/> written by this version.</summary>
    public const string FormatValue = "weight-ensembling/test-time-adaptation/1";

    /// <summary>The metadata key of the method name.</summary>
    public const string MethodKey = "method";

    /// <summary>The metadata key of the step count.</summary>
    public const string StepKey = "step";

    /// <summary>The metadata key of the options JSON.</summary>
    public const string OptionsKey = "options";

    /// <summary>The metadata key of the frozen weights' fingerprint.</summary>
    public const string FingerprintKey = "fingerprint";

    /// <summary>Saves <paramref name="model"/>'s trainable parameters (no optimizer state), atomically.</summary>
    /// <param name="path">The safetensors file to write.</param>
    /// <param name="model">The adapted model.</param>
    /// <param name="step">The number of steps behind the parameters, non-negative.</param>
    /// <param name="options">The options of the run, or <see langword="null"/> for the defaults.</param>
    public static void Save(string path, IAdaptableModel model, int step, TestTimeAdaptationOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        Save(path, model, step, options ?? new TestTimeAdaptationOptions(), optimizer: null);
    }

    /// <summary>Reads a checkpoint's metadata without loading anything.</summary>
    /// <param name="path">The checkpoint file.</param>
    /// <returns>The metadata.</returns>
    /// <exception cref="InvalidDataException">The file is not an adaptation checkpoint; the message names it.</exception>
    public static AdaptationCheckpointInfo ReadInfo(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        using var file = SafeTensorsFile.Open(path);
        return ReadInfo(file, path);
    }

    /// <summary>
    /// Loads a checkpoint's trainable parameters into <paramref name="model"/> (to skip training, or to inspect a run),
    /// after checking that it was trained on the same frozen weights.
    /// </summary>
    /// <param name="path">The checkpoint file.</param>
    /// <param name="model">The model to load into; unchanged when loading fails.</param>
    /// <returns>The checkpoint's metadata.</returns>
    /// <exception cref="InvalidDataException">
    /// The file is not an adaptation checkpoint, was trained on other weights (other pre-trained model or experts), or
    /// lacks a parameter or holds one of the wrong shape; the message names the file and what differs.
    /// </exception>
    public static AdaptationCheckpointInfo Load(string path, IAdaptableModel model)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(model);
        return Load(path, model, optimizer: null);
    }

    internal static void Save(string path, IAdaptableModel model, int step, TestTimeAdaptationOptions options, AdamOptimizer? optimizer)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, parameter) in model.NamedTrainableParameters())
        {
            tensors[name] = parameter.detach().cpu().contiguous();
        }

        if (optimizer is not null)
        {
            foreach (var (name, tensor) in optimizer.State())
            {
                tensors[name] = tensor.detach().cpu().contiguous();
            }
        }

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [FormatKey] = FormatValue,
            [MethodKey] = model.Method,
            [StepKey] = step.ToString(CultureInfo.InvariantCulture),
            [OptionsKey] = options.ToJson(),
            [FingerprintKey] = model.Fingerprint(),
        };
        SafeTensorsWriter.Save(path, tensors, metadata);
    }

    internal static AdaptationCheckpointInfo Load(string path, IAdaptableModel model, AdamOptimizer? optimizer)
    {
        using var file = SafeTensorsFile.Open(path);
        var info = ReadInfo(file, path);
        string fingerprint = model.Fingerprint();
        if (!string.Equals(info.Fingerprint, fingerprint, StringComparison.Ordinal))
        {
            throw new InvalidDataException(
                $"Checkpoint '{path}' was trained for {info.Method} on other weights (fingerprint {info.Fingerprint[..Math.Min(12, info.Fingerprint.Length)]}…) than this {model.Method} model (fingerprint {fingerprint[..12]}…): the pre-trained model, the experts or the model structure differ.");
        }

        using var scope = NewDisposeScope();
        var named = model.NamedTrainableParameters();
        var loaded = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, parameter) in named)
        {
            if (!file.Contains(name))
            {
                throw new InvalidDataException($"Checkpoint '{path}' lacks trainable parameter '{name}'.");
            }

            var tensor = Models.TrainedWeightsFolder.LoadTensor(file, name, path);
            if (!tensor.shape.SequenceEqual(parameter.shape))
            {
                throw new InvalidDataException(
                    $"Checkpoint '{path}': parameter '{name}' has shape [{string.Join(", ", tensor.shape)}], expected [{string.Join(", ", parameter.shape)}].");
            }

            loaded[name] = tensor;
        }

        Models.TrainedWeightsFolder.CheckFinite(loaded, $"Checkpoint '{path}'");
        var extra = file.Names.Where(n => !loaded.ContainsKey(n) && !n.StartsWith("optimizer.", StringComparison.Ordinal)).ToList();
        if (extra.Count > 0)
        {
            throw new InvalidDataException($"Checkpoint '{path}' holds tensors this model does not have: {string.Join(", ", extra.Take(5))}.");
        }

        if (optimizer is not null)
        {
            if (!info.HasOptimizerState)
            {
                throw new InvalidDataException($"Checkpoint '{path}' holds no optimizer state: it can be loaded but not resumed.");
            }

            var state = file.Names.Where(n => n.StartsWith("optimizer.", StringComparison.Ordinal))
                .ToDictionary(n => n, n => Models.TrainedWeightsFolder.LoadTensor(file, n, path), StringComparer.Ordinal);
            Models.TrainedWeightsFolder.CheckFinite(state, $"Checkpoint '{path}'");
            optimizer.LoadState(state, info.Step, path);
        }

        using var noGrad = no_grad();
        foreach (var (name, parameter) in named)
        {
            parameter.copy_(loaded[name]);
        }

        return info;
    }

    private static AdaptationCheckpointInfo ReadInfo(SafeTensorsFile file, string path)
    {
        var metadata = file.Metadata;
        if (!metadata.TryGetValue(FormatKey, out var format) || format != FormatValue)
        {
            throw new InvalidDataException($"'{path}' is not a test-time adaptation checkpoint: its metadata '{FormatKey}' is not '{FormatValue}'.");
        }

        string Require(string key) => metadata.TryGetValue(key, out var value)
            ? value
            : throw new InvalidDataException($"Checkpoint '{path}' lacks metadata '{key}'.");
        if (!int.TryParse(Require(StepKey), NumberStyles.None, CultureInfo.InvariantCulture, out int step))
        {
            throw new InvalidDataException($"Checkpoint '{path}': metadata '{StepKey}' is not a non-negative integer.");
        }

        TestTimeAdaptationOptions options;
        try
        {
            options = TestTimeAdaptationOptions.FromJson(Require(OptionsKey));
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"Checkpoint '{path}': metadata '{OptionsKey}' is not valid options JSON.", e);
        }

        bool hasOptimizer = file.Names.Any(n => n.StartsWith(AdamOptimizer.ExpAvgPrefix, StringComparison.Ordinal));
        return new AdaptationCheckpointInfo(Require(MethodKey), step, options, Require(FingerprintKey), hasOptimizer);
    }
}
