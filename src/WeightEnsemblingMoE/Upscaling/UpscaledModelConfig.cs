using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Upscaling;

/// <summary>
/// Everything needed to rebuild an upscaled model (WEMoE, E-WEMoE, low-rank or sparse WEMoE, PWEMoE) from a model pool
/// and to refuse a pool it was not trained on: the method, the upscaler's options, the experts' names in order and the
/// fingerprints of θ_0 and of every task vector. It is written as <see cref="FileName"/> beside the router weights by
/// <see cref="UpscaledModelBase.SavePretrained"/> (for <see cref="UpscaledModel"/> and <c>ParetoUpscaledModel</c>), as peft writes
/// <c>adapter_config.json</c>.
/// </summary>
public sealed record UpscaledModelConfig
{
    /// <summary>The name of the configuration file in a saved folder.</summary>
    public const string FileName = "upscaled_model_config.json";

    /// <summary>The value of the <c>format</c> field written by this version.</summary>
    public const string FormatValue = "weight-ensembling/upscaled-model/1";

    /// <summary>The method: <c>WEMoE</c> (per-module routers), <c>E-WEMoE</c> (one shared router) or <c>PWEMoE</c> (preference routers).</summary>
    public required string Method { get; init; }

    /// <summary>The number of layers of each router (0, 1 or 2).</summary>
    public required int RouterDepth { get; init; }

    /// <summary>λ: the routers' initial routing weight and the task-arithmetic factor of every weight that is not upscaled.</summary>
    public required double InitLambda { get; init; }

    /// <summary>Whether one router is shared by every upscaled module.</summary>
    public required bool SharedRouter { get; init; }

    /// <summary>Whether the shared router reads a layer-position encoding.</summary>
    public required bool PositionEncoding { get; init; }

    /// <summary>Which modules of each layer are upscaled.</summary>
    public required UpscaleTargets Targets { get; init; }

    /// <summary>The upscaled encoder layers (0-based, ascending).</summary>
    public required IReadOnlyList<int> Layers { get; init; }

    /// <summary>How the task vectors are stored.</summary>
    public required TaskVectorStorageKind StorageKind { get; init; }

    /// <summary>The sparse storage's ratio of zeroed entries (sparse storage only).</summary>
    public double? SparsityRatio { get; init; }

    /// <summary>The low-rank storage's rank (low-rank storage with a fixed rank only).</summary>
    public int? Rank { get; init; }

    /// <summary>The low-rank storage's energy threshold (low-rank storage chosen by energy only).</summary>
    public double? EnergyThreshold { get; init; }

    /// <summary>
    /// The dtype the task vectors are stored in (<see cref="TaskVectorStorageOptions.DType"/>), written as
    /// <c>task_vector_dtype</c> (<c>float32</c>, <c>float16</c> or <c>bfloat16</c>); a file without the field was saved
    /// from float32 storage. The default value is <see cref="ScalarType.Float32"/>.
    /// </summary>
    public ScalarType TaskVectorDType { get; init; } = ScalarType.Float32;

    /// <summary>Whether <c>visual_projection</c> keeps the pre-trained weights instead of task arithmetic (<see cref="ModelUpscalerOptions.PretrainedProjection"/>).</summary>
    public bool PretrainedProjection { get; init; }

    /// <summary>The routers' initialisation seed.</summary>
    public required long Seed { get; init; }

    /// <summary>The experts' names, in task order.</summary>
    public required IReadOnlyList<string> ExpertNames { get; init; }

    /// <summary>The fingerprint of θ_0 (see <see cref="Models.ModelPool.Fingerprint"/>).</summary>
    public required string PretrainedFingerprint { get; init; }

    /// <summary>The fingerprint of each task vector, in task order.</summary>
    public required IReadOnlyList<string> TaskVectorFingerprints { get; init; }

    /// <summary>The name of the router weights file in the folder.</summary>
    public string? WeightsFile { get; init; }

    /// <summary>The SHA-256 of the router weights file, lowercase hexadecimal.</summary>
    public string? WeightsSha256 { get; init; }

    /// <summary>The upscaler options this configuration describes (for <see cref="ModelUpscaler.WithOptions"/>).</summary>
    /// <returns>New options.</returns>
    public ModelUpscalerOptions ToOptions() => new()
    {
        RouterDepth = RouterDepth,
        InitLambda = InitLambda,
        SharedRouter = SharedRouter,
        PositionEncoding = PositionEncoding,
        Targets = Targets,
        Layers = Layers.ToArray(),
        PretrainedProjection = PretrainedProjection,
        Seed = Seed,
        TaskVectorStorage = new TaskVectorStorageOptions
        {
            Kind = StorageKind,
            SparsityRatio = SparsityRatio ?? 0.9,
            Rank = Rank,
            EnergyThreshold = EnergyThreshold,
            DType = TaskVectorDType,
        },
    };

    /// <summary>
    /// What differs between this (saved) configuration and <paramref name="target"/> (the model or pool it would load
    /// into), one sentence each; empty when the saved routers fit.
    /// </summary>
    /// <param name="target">The configuration of the target.</param>
    /// <returns>The differences.</returns>
    public IReadOnlyList<string> DifferencesFrom(UpscaledModelConfig target)
    {
        ArgumentNullException.ThrowIfNull(target);
        var differences = new List<string>();
        void Compare<T>(string what, T saved, T actual)
        {
            if (!EqualityComparer<T>.Default.Equals(saved, actual))
            {
                differences.Add($"{what}: saved {saved}, target {actual}");
            }
        }

        Compare("method", Method, target.Method);
        Compare("router depth", RouterDepth, target.RouterDepth);
        Compare("shared router", SharedRouter, target.SharedRouter);
        Compare("position encoding", PositionEncoding, target.PositionEncoding);
        Compare("targets", Targets, target.Targets);
        Compare("task-vector storage", StorageKind, target.StorageKind);
        if (StorageKind == target.StorageKind)
        {
            Compare("sparsity ratio", SparsityRatio, target.SparsityRatio);
            Compare("rank", Rank, target.Rank);
            Compare("energy threshold", EnergyThreshold, target.EnergyThreshold);
        }

        Compare("task-vector dtype", DTypeName(TaskVectorDType), DTypeName(target.TaskVectorDType));

        Compare("λ of the non-upscaled weights", InitLambda, target.InitLambda);
        Compare("pre-trained projection", PretrainedProjection, target.PretrainedProjection);
        if (!Layers.SequenceEqual(target.Layers))
        {
            differences.Add($"upscaled layers: saved [{string.Join(", ", Layers)}], target [{string.Join(", ", target.Layers)}]");
        }

        differences.AddRange(Models.ModelPoolFingerprint.Differences(
            ExpertNames, new Models.ModelPoolFingerprint(PretrainedFingerprint, TaskVectorFingerprints),
            target.ExpertNames, new Models.ModelPoolFingerprint(target.PretrainedFingerprint, target.TaskVectorFingerprints)));
        return differences;
    }

    /// <summary>Reads a configuration file, checking every field.</summary>
    /// <param name="path">The file (<see cref="FileName"/> in a saved folder).</param>
    /// <returns>The configuration.</returns>
    /// <exception cref="InvalidDataException">The file is not such a configuration, or a field is missing or invalid; the message names the file and the field.</exception>
    public static UpscaledModelConfig FromFile(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"No upscaled-model configuration at '{path}'.", path);
        }

        JsonObject root;
        try
        {
            root = Models.TrainedWeightsFolder.ParseConfig(path) as JsonObject
                ?? throw new InvalidDataException($"'{path}' does not hold a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }

        T Get<T>(string name)
        {
            if (!root.TryGetPropertyValue(name, out var node) || node is null)
            {
                throw new InvalidDataException($"'{path}' lacks field '{name}'.");
            }

            try
            {
                return node.GetValue<T>();
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"'{path}': field '{name}' is not a {typeof(T).Name}.", e);
            }
        }

        T? Optional<T>(string name) where T : struct =>
            root.TryGetPropertyValue(name, out var node) && node is not null ? Get<T>(name) : null;

        IReadOnlyList<T> List<T>(string name)
        {
            if (!root.TryGetPropertyValue(name, out var node) || node is not JsonArray array)
            {
                throw new InvalidDataException($"'{path}' lacks array field '{name}'.");
            }

            try
            {
                return array.Select(n => n is null ? throw new InvalidDataException($"'{path}': '{name}' holds null.") : n.GetValue<T>()).ToArray();
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"'{path}': field '{name}' holds a value that is not a {typeof(T).Name}.", e);
            }
        }

        string format = Get<string>("format");
        if (format != FormatValue)
        {
            throw new InvalidDataException($"'{path}' has format '{format}'; this version reads '{FormatValue}'.");
        }

        var config = new UpscaledModelConfig
        {
            Method = Get<string>("method"),
            RouterDepth = Get<int>("router_depth"),
            InitLambda = Get<double>("init_lambda"),
            SharedRouter = Get<bool>("shared_router"),
            PositionEncoding = Get<bool>("position_encoding"),
            Targets = ParseTargets(Get<string>("targets"), path),
            Layers = List<int>("layers"),
            StorageKind = ParseStorage(Get<string>("storage"), path),
            SparsityRatio = Optional<double>("sparsity_ratio"),
            Rank = Optional<int>("rank"),
            EnergyThreshold = Optional<double>("energy_threshold"),
            TaskVectorDType = root.TryGetPropertyValue("task_vector_dtype", out var dtypeNode) && dtypeNode is not null
                ? ParseDType(Get<string>("task_vector_dtype"), path)
                : ScalarType.Float32,
            PretrainedProjection = Optional<bool>("pretrained_projection") ?? false,
            Seed = Get<long>("seed"),
            ExpertNames = List<string>("expert_names"),
            PretrainedFingerprint = Get<string>("pretrained_fingerprint"),
            TaskVectorFingerprints = List<string>("task_vector_fingerprints"),
            WeightsFile = Get<string>("weights_file"),
            WeightsSha256 = Get<string>("weights_sha256"),
        };
        if (config.ExpertNames.Count != config.TaskVectorFingerprints.Count || config.ExpertNames.Count == 0)
        {
            throw new InvalidDataException($"'{path}' names {config.ExpertNames.Count} experts and {config.TaskVectorFingerprints.Count} task-vector fingerprints.");
        }

        if (config.WeightsFile!.IndexOfAny(['/', '\\']) >= 0 || config.WeightsFile is "." or "..")
        {
            throw new InvalidDataException($"'{path}': weights_file '{config.WeightsFile}' must be a file name in the same folder.");
        }

        try
        {
            config.ToOptions().Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{path}' holds an invalid option: {e.Message}", e);
        }

        return config;
    }

    /// <summary>The configuration as indented JSON with snake_case field names.</summary>
    /// <returns>The JSON text.</returns>
    public string ToJson()
    {
        var root = new JsonObject
        {
            ["format"] = FormatValue,
            ["method"] = Method,
            ["router_depth"] = RouterDepth,
            ["init_lambda"] = InitLambda,
            ["shared_router"] = SharedRouter,
            ["position_encoding"] = PositionEncoding,
            ["targets"] = Targets switch
            {
                UpscaleTargets.Mlp => "mlp",
                UpscaleTargets.Attention => "attention",
                _ => "mlp+attention",
            },
            ["layers"] = new JsonArray(Layers.Select(l => (JsonNode)l).ToArray()),
            ["storage"] = StorageKind switch
            {
                TaskVectorStorageKind.Dense => "dense",
                TaskVectorStorageKind.Sparse => "sparse",
                _ => "low_rank",
            },
        };
        if (SparsityRatio is { } ratio)
        {
            root["sparsity_ratio"] = ratio;
        }

        if (Rank is { } rank)
        {
            root["rank"] = rank;
        }

        if (EnergyThreshold is { } energy)
        {
            root["energy_threshold"] = energy;
        }

        root["task_vector_dtype"] = DTypeName(TaskVectorDType);
        root["pretrained_projection"] = PretrainedProjection;
        root["seed"] = Seed;
        root["expert_names"] = new JsonArray(ExpertNames.Select(n => (JsonNode)n).ToArray());
        root["pretrained_fingerprint"] = PretrainedFingerprint;
        root["task_vector_fingerprints"] = new JsonArray(TaskVectorFingerprints.Select(n => (JsonNode)n).ToArray());
        root["weights_file"] = WeightsFile;
        root["weights_sha256"] = WeightsSha256;
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>The configuration of a model built with <paramref name="options"/> over a pool with these experts.</summary>
    internal static UpscaledModelConfig Describe(string method, ModelUpscalerOptions options, IReadOnlyList<int> layers, IReadOnlyList<string> expertNames, Models.ModelPoolFingerprint fingerprint)
    {
        var storage = options.TaskVectorStorage;
        return new UpscaledModelConfig
        {
            Method = method,
            RouterDepth = options.RouterDepth,
            InitLambda = options.InitLambda,
            SharedRouter = options.SharedRouter,
            PositionEncoding = options.PositionEncoding,
            Targets = options.Targets,
            Layers = layers.ToArray(),
            PretrainedProjection = options.PretrainedProjection,
            StorageKind = storage.Kind,
            SparsityRatio = storage.Kind == TaskVectorStorageKind.Sparse ? storage.SparsityRatio : null,
            Rank = storage.Kind == TaskVectorStorageKind.LowRank ? storage.Rank : null,
            EnergyThreshold = storage.Kind == TaskVectorStorageKind.LowRank ? storage.EnergyThreshold : null,
            TaskVectorDType = storage.DType,
            Seed = options.Seed,
            ExpertNames = expertNames.ToArray(),
            PretrainedFingerprint = fingerprint.Pretrained,
            TaskVectorFingerprints = fingerprint.TaskVectors.ToArray(),
        };
    }

    private static UpscaleTargets ParseTargets(string value, string path) => value switch
    {
        "mlp" => UpscaleTargets.Mlp,
        "attention" => UpscaleTargets.Attention,
        "mlp+attention" => UpscaleTargets.MlpAndAttention,
        _ => throw new InvalidDataException($"'{path}': targets '{value}' is not mlp, attention or mlp+attention."),
    };

    private static string DTypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        _ => dtype.ToString(),
    };

    private static ScalarType ParseDType(string value, string path) => value switch
    {
        "float32" => ScalarType.Float32,
        "float16" => ScalarType.Float16,
        "bfloat16" => ScalarType.BFloat16,
        _ => throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture, $"'{path}': task_vector_dtype '{value}' is not float32, float16 or bfloat16.")),
    };

    private static TaskVectorStorageKind ParseStorage(string value, string path) => value switch
    {
        "dense" => TaskVectorStorageKind.Dense,
        "sparse" => TaskVectorStorageKind.Sparse,
        "low_rank" => TaskVectorStorageKind.LowRank,
        _ => throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture, $"'{path}': storage '{value}' is not dense, sparse or low_rank.")),
    };
}
