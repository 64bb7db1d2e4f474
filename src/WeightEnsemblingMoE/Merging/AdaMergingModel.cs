using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;
using WeightEnsembling.Training;

namespace WeightEnsembling.Merging;

/// <summary>
/// AdaMerging (Yang et al., ICLR 2024) over every parameter tensor of a CLIP vision model: θ = θ_0 + Σ_t λ_t τ_t with
/// τ_t = θ_t − θ_0, where λ (<c>merge_weight</c>, shape [T] task-wise or [P, T] layer-wise) is the only trainable
/// parameter. The merged weights are rebuilt functionally at every forward pass so that gradients reach λ; after
/// adaptation <see cref="MergeAndUnload"/> returns a plain model.
/// </summary>
public sealed class AdaMergingModel : IAdaptableModel, IDisposable
{
    /// <summary>The checkpoint name of the coefficients, as in FusionBench.</summary>
    public const string MergeWeightName = "merge_weight";

    private readonly FunctionalClip functional;
    private readonly Dictionary<string, Tensor> pretrained;
    private readonly Dictionary<string, Tensor> taskVectors;
    private readonly Dictionary<string, int> rows;
    private Parameter mergeWeight;
    private readonly ModelPool pool;
    private bool disposed;

    private AdaMergingModel(
        ModelPool pool,
        FunctionalClip functional,
        Dictionary<string, Tensor> pretrained,
        Dictionary<string, Tensor> taskVectors,
        IReadOnlyList<string> names,
        int taskCount,
        AdaMergingOptions options)
    {
        this.pool = pool;
        this.functional = functional;
        this.pretrained = pretrained;
        this.taskVectors = taskVectors;
        ParameterNames = names;
        TaskCount = taskCount;
        Options = options;
        rows = names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        long[] shape = options.Granularity == AdaMergingGranularity.TaskWise ? [taskCount] : [names.Count, taskCount];
        mergeWeight = new Parameter(full(shape, options.InitLambda, ScalarType.Float32, device: pretrained.Values.FirstOrDefault()?.device ?? CPU), requires_grad: true);
        mergeWeight.DetachFromDisposeScope();
    }

    /// <summary>The merging options.</summary>
    public AdaMergingOptions Options { get; }

    /// <summary>The number of tasks T.</summary>
    public int TaskCount { get; }

    /// <summary>The merged parameter tensors' names, in the row order of layer-wise <see cref="MergeWeight"/>.</summary>
    public IReadOnlyList<string> ParameterNames { get; }

    /// <summary>The coefficients λ: shape [T] (task-wise) or [P, T] (layer-wise), unclamped.</summary>
    public Parameter MergeWeight => mergeWeight;

    /// <summary>The device holding θ_0, the task vectors and λ (the CPU after <see cref="Create(ModelPool, AdaMergingOptions?)"/>).</summary>
    public Device Device => mergeWeight.device;

    /// <summary>
    /// Moves θ_0, the task vectors and λ to <paramref name="device"/>. λ becomes a new <see cref="Parameter"/> (with the
    /// same values), so build the optimizer after moving the model, as with <c>Module.to</c>.
    /// </summary>
    /// <param name="device">The device, e.g. <c>torch.CUDA</c>.</param>
    /// <returns>This model.</returns>
    public AdaMergingModel To(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        ObjectDisposedException.ThrowIf(disposed, this);
        if (DeviceOf.Same(device, Device))
        {
            return this;
        }

        using var noGrad = no_grad();
        foreach (var map in new[] { pretrained, taskVectors })
        {
            foreach (var name in map.Keys.ToList())
            {
                var moved = map[name].to(device).DetachFromDisposeScope();
                map[name].Dispose();
                map[name] = moved;
            }
        }

        var old = mergeWeight;
        mergeWeight = new Parameter(old.detach().to(device), requires_grad: true);
        mergeWeight.DetachFromDisposeScope();
        old.Dispose();
        return this;
    }

    /// <summary>The name of the configuration file <see cref="SavePretrained"/> writes.</summary>
    public const string ConfigFileName = "adamerging_config.json";

    private const string ConfigFormat = "weight-ensembling/adamerging/1";

    /// <summary>The experts' names, in task order (the columns of <see cref="MergeWeight"/>).</summary>
    public IReadOnlyList<string> ExpertNames => pool.ExpertNames;

    /// <summary>
    /// Saves the merging coefficients with a configuration (granularity, clamp, λ, the experts' names and the fingerprints
    /// of θ_0 and every task vector), written last so that a save killed part-way leaves the previous one intact.
    /// </summary>
    /// <param name="folder">The folder, created if needed; an earlier save in it is replaced.</param>
    /// <exception cref="InvalidDataException">A coefficient is NaN or Inf (nothing is written).</exception>
    public void SavePretrained(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ObjectDisposedException.ThrowIf(disposed, this);
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal) { [MergeWeightName] = mergeWeight.detach().cpu().contiguous() };
        var poolFingerprint = pool.Fingerprint();
        TrainedWeightsFolder.Save(folder, ConfigFileName, (file, sha) => new JsonObject
        {
            ["format"] = ConfigFormat,
            ["method"] = Method,
            ["granularity"] = Options.Granularity == AdaMergingGranularity.TaskWise ? "task_wise" : "layer_wise",
            ["clamp"] = Options.Clamp,
            ["init_lambda"] = Options.InitLambda,
            ["expert_names"] = new JsonArray(pool.ExpertNames.Select(n => (JsonNode)n).ToArray()),
            ["parameter_names"] = new JsonArray(ParameterNames.Select(n => (JsonNode)n).ToArray()),
            ["pretrained_fingerprint"] = poolFingerprint.Pretrained,
            ["task_vector_fingerprints"] = new JsonArray(poolFingerprint.TaskVectors.Select(n => (JsonNode)n).ToArray()),
            ["weights_file"] = file,
            ["weights_sha256"] = sha,
        }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }), tensors);
    }

    /// <summary>Loads coefficients saved by <see cref="SavePretrained"/> after checking that they fit this model and its pool; unchanged on failure.</summary>
    /// <param name="folder">The saved folder.</param>
    /// <exception cref="InvalidDataException">The granularity, the tensors, θ_0 or the experts (missing, extra, reordered or other weights) differ; the message names every difference.</exception>
    public void LoadPretrained(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ObjectDisposedException.ThrowIf(disposed, this);
        string path = Path.Combine(folder, ConfigFileName);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"No AdaMerging configuration at '{path}'.", path);
        }

        JsonObject config;
        try
        {
            config = TrainedWeightsFolder.ParseConfig(path) as JsonObject
                ?? throw new InvalidDataException($"'{path}' does not hold a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }

        string Text(string name) => config[name] is JsonValue value && value.TryGetValue<string>(out var text)
            ? text
            : throw new InvalidDataException($"'{path}' lacks string field '{name}'.");
        string[] Texts(string name) => config[name] is JsonArray array && array.All(n => n is JsonValue v && v.TryGetValue<string>(out _))
            ? array.Select(n => n!.GetValue<string>()).ToArray()
            : throw new InvalidDataException($"'{path}' lacks string-array field '{name}'.");
        if (Text("format") != ConfigFormat)
        {
            throw new InvalidDataException($"'{path}' has format '{Text("format")}'; this version reads '{ConfigFormat}'.");
        }

        var differences = new List<string>();
        if (Text("method") != Method)
        {
            differences.Add($"method: saved {Text("method")}, target {Method}");
        }

        var savedNames = Texts("expert_names");
        var savedFingerprints = Texts("task_vector_fingerprints");
        if (savedFingerprints.Length != savedNames.Length)
        {
            throw new InvalidDataException($"'{path}' names {savedNames.Length} experts and {savedFingerprints.Length} task-vector fingerprints.");
        }

        differences.AddRange(ModelPoolFingerprint.Differences(
            savedNames, new ModelPoolFingerprint(Text("pretrained_fingerprint"), savedFingerprints), pool.ExpertNames, pool.Fingerprint()));
        if (!Texts("parameter_names").SequenceEqual(ParameterNames, StringComparer.Ordinal))
        {
            differences.Add("the merged tensors' names differ (another architecture)");
        }

        if (differences.Count > 0)
        {
            throw new InvalidDataException($"The coefficients saved in '{folder}' do not fit this model: {string.Join("; ", differences)}.");
        }

        var loaded = TrainedWeightsFolder.ReadWeights(folder, ConfigFileName, Text("weights_file"), Text("weights_sha256"));
        try
        {
            if (loaded.Count != 1 || !loaded.TryGetValue(MergeWeightName, out var weight) || !weight.shape.SequenceEqual(mergeWeight.shape))
            {
                throw new InvalidDataException(
                    $"'{folder}' must hold exactly '{MergeWeightName}' of shape [{string.Join(", ", mergeWeight.shape)}]; it holds {string.Join(", ", loaded.Select(l => $"'{l.Key}' [{string.Join(", ", l.Value.shape)}]"))}.");
            }

            using var noGrad = no_grad();
            mergeWeight.copy_(weight);
        }
        finally
        {
            foreach (var tensor in loaded.Values)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>Rebuilds an AdaMerging model saved by <see cref="SavePretrained"/> over <paramref name="modelPool"/>, refusing a pool that differs.</summary>
    /// <param name="folder">The saved folder.</param>
    /// <param name="modelPool">θ_0 and the experts the coefficients were trained on.</param>
    /// <returns>The model; the caller owns it.</returns>
    /// <exception cref="InvalidDataException">The folder is not a saved AdaMerging model, or the pool differs; the message names every difference.</exception>
    public static AdaMergingModel FromPretrained(string folder, ModelPool modelPool)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ArgumentNullException.ThrowIfNull(modelPool);
        string path = Path.Combine(folder, ConfigFileName);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"No AdaMerging configuration at '{path}'.", path);
        }

        AdaMergingOptions options;
        try
        {
            var config = TrainedWeightsFolder.ParseConfig(path)!;
            options = new AdaMergingOptions
            {
                Granularity = config["granularity"]!.GetValue<string>() switch
                {
                    "task_wise" => AdaMergingGranularity.TaskWise,
                    "layer_wise" => AdaMergingGranularity.LayerWise,
                    var other => throw new InvalidDataException($"'{path}': granularity '{other}' is not task_wise or layer_wise."),
                },
                Clamp = config["clamp"]!.GetValue<bool>(),
                InitLambda = config["init_lambda"]!.GetValue<double>(),
            };
            options.Validate();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException or FormatException or ArgumentException)
        {
            throw new InvalidDataException($"'{path}' is not a valid AdaMerging configuration: {e.Message}", e);
        }

        var model = Create(modelPool, options);
        try
        {
            model.LoadPretrained(folder);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public string Method => Options.Granularity == AdaMergingGranularity.TaskWise ? "AdaMerging (task-wise)" : "AdaMerging (layer-wise)";

    /// <summary>
    /// Builds the model from a pre-trained CLIP vision model and its fine-tuned experts (copied: the inputs are neither
    /// modified nor kept).
    /// </summary>
    /// <param name="pretrained">θ_0.</param>
    /// <param name="experts">θ_1..θ_T, with θ_0's parameter names and shapes.</param>
    /// <param name="options">The merging options, or <see langword="null"/> for the defaults.</param>
    /// <returns>The model; the caller owns it.</returns>
    /// <exception cref="ArgumentException">No experts, or an expert's tensors differ from θ_0's in name, shape or projection; the message names the expert and tensor.</exception>
    public static AdaMergingModel Create(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> experts, AdaMergingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(experts);
        if (experts.Count == 0)
        {
            throw new ArgumentException("AdaMerging needs at least one expert.", nameof(experts));
        }

        return Create(ModelPool.FromModels(pretrained, experts), options);
    }

    /// <summary>
    /// Builds the model from a model pool: θ_0 and the stacked task vectors [T, …] of every tensor are copied out of the
    /// pool (streamed expert by expert), so the pool's models or files are not needed afterwards.
    /// </summary>
    /// <param name="modelPool">θ_0 and the experts.</param>
    /// <param name="options">The merging options, or <see langword="null"/> for the defaults.</param>
    /// <returns>The model; the caller owns it.</returns>
    /// <exception cref="InvalidDataException">A weight is NaN or Inf; the message names the model and the tensor.</exception>
    public static AdaMergingModel Create(ModelPool modelPool, AdaMergingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(modelPool);
        options ??= new AdaMergingOptions();
        options.Validate();
        var names = modelPool.Keys.ToList();
        var theta0 = modelPool.LoadPretrained(names);
        var vectors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var noGrad = no_grad();
            foreach (var name in names)
            {
                vectors[name] = empty([modelPool.ExpertCount, .. theta0[name].shape], ScalarType.Float32, device: theta0[name].device);
            }

            int t = 0;
            foreach (var taskVector in modelPool.TaskVectors(theta0))
            {
                foreach (var name in names)
                {
                    using var slot = vectors[name][t];
                    slot.copy_(taskVector[name]);
                }

                t++;
            }

            var functional = new FunctionalClip(modelPool.Config, modelPool.HasProjection);
            return new AdaMergingModel(modelPool, functional, theta0, vectors, names, modelPool.ExpertCount, options);
        }
        catch
        {
            foreach (var tensor in theta0.Values.Concat(vectors.Values))
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<KeyValuePair<string, Parameter>> NamedTrainableParameters() =>
        [KeyValuePair.Create(MergeWeightName, mergeWeight)];

    /// <summary>Nothing to switch: AdaMerging has no input-dependent routing.</summary>
    /// <param name="training">Ignored.</param>
    public void SetTraining(bool training)
    {
    }

    /// <summary>The merged model's image features, differentiable with respect to <see cref="MergeWeight"/>.</summary>
    /// <param name="pixelValues">Images [B, C, H, W], on any device (copied to <see cref="Device"/>).</param>
    /// <returns>Features [B, D], on <see cref="Device"/>.</returns>
    public Tensor Features(Tensor pixelValues)
    {
        ArgumentNullException.ThrowIfNull(pixelValues);
        ObjectDisposedException.ThrowIf(disposed, this);
        using var scope = NewDisposeScope();
        var lambdas = Options.Clamp ? mergeWeight.clamp(0, 1) : mergeWeight.alias();
        var cache = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        Tensor Weight(string name)
        {
            if (!cache.TryGetValue(name, out var merged))
            {
                merged = Merge(name, lambdas);
                cache[name] = merged;
            }

            return merged;
        }

        return functional.Features(Weight, pixelValues).MoveToOuterDisposeScope();
    }

    /// <summary>The merged weights at the current (clamped, if so configured) coefficients, detached, by state-dict key.</summary>
    /// <returns>New tensors the caller owns.</returns>
    public Dictionary<string, Tensor> MergedWeights()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var lambdas = Options.Clamp ? mergeWeight.clamp(0, 1) : mergeWeight.alias();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var name in ParameterNames)
        {
            var merged = Merge(name, lambdas);
            if (!merged.isfinite().all().item<bool>())
            {
                throw new InvalidOperationException($"Merged tensor '{name}' holds NaN or infinity.");
            }

            result[name] = merged.DetachFromDisposeScope();
        }

        return result;
    }

    /// <summary>Merges at the current coefficients and returns a plain CLIP vision model with no AdaMerging overhead.</summary>
    /// <returns>A new model the caller owns, in evaluation mode.</returns>
    public ClipVisionModel MergeAndUnload()
    {
        var weights = MergedWeights();
        try
        {
            var model = ClipVisionModel.FromStateDict(functional.Config, functional.HasProjection, weights);
            if (!DeviceOf.Same(Device, CPU))
            {
                model.to(Device);
            }

            return model;
        }
        finally
        {
            foreach (var tensor in weights.Values)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>Disposes the stored weights, task vectors and coefficients.</summary>
    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        foreach (var tensor in pretrained.Values.Concat(taskVectors.Values))
        {
            tensor.Dispose();
        }

        mergeWeight.Dispose();
        functional.Dispose();
    }

    private Tensor Merge(string name, Tensor lambdas)
    {
        var vectors = taskVectors[name];
        var row = Options.Granularity == AdaMergingGranularity.TaskWise ? lambdas : lambdas[rows[name]];
        var shape = new long[vectors.dim()];
        Array.Fill(shape, 1L);
        shape[0] = TaskCount;
        return pretrained[name] + (row.view(shape) * vectors).sum(dim: 0);
    }
}
