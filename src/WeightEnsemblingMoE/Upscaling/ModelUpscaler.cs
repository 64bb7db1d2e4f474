using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Diagnostics;
using WeightEnsembling.Models;
using WeightEnsembling.Moe;
using WeightEnsembling.Pareto;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Upscaling;

/// <summary>
/// Builds a WEMoE model from one pre-trained CLIP vision model and T fine-tuned copies: every selected MLP (and/or
/// attention block) becomes a <see cref="Moe.WeightEnsemblingMoE"/> over the experts' task vectors, and every other
/// parameter is merged by task arithmetic, θ_0 + λ Σ_t τ_t.
/// </summary>
/// <remarks>
/// The inputs are never modified. Experts given as folders are read one tensor at a time from their safetensors files:
/// the upscaler keeps only what the result needs (merged base, task vectors of the upscaled modules, routers), so eight
/// ViT-B/32 experts upcycle in a few gigabytes. Nothing is half-built on failure: the partial result is disposed and the
/// exception names the model and the tensor at fault.
/// </remarks>
/// <example>
/// <code>
/// using var upscaled = ModelUpscaler.For(pretrained).WithExperts(svhn, mnist, gtsrb)
///     .WithRouterDepth(2).WithInitLambda(0.3).Build();
/// </code>
/// </example>
public sealed class ModelUpscaler
{
    private readonly ModelPool? pool;
    private readonly ClipVisionModel? pretrainedModel;
    private readonly string? pretrainedFolder;
    private readonly List<object> experts = [];
    private ModelUpscalerOptions options = new();
    private ILogger logger = NullLogger<ModelUpscaler>.Instance;

    private ModelUpscaler(ModelPool? pool, ClipVisionModel? model, string? folder)
    {
        this.pool = pool;
        pretrainedModel = model;
        pretrainedFolder = folder;
    }

    /// <summary>Starts an upscaler over a model pool: θ_0 and the named experts, in memory or streamed from folders.</summary>
    /// <param name="modelPool">The pool; its expert order is the order of routing weights.</param>
    /// <returns>The upscaler.</returns>
    public static ModelUpscaler For(ModelPool modelPool)
    {
        ArgumentNullException.ThrowIfNull(modelPool);
        return new ModelUpscaler(modelPool, null, null);
    }

    /// <summary>Starts an upscaler for a pre-trained model in memory (not modified, not disposed).</summary>
    /// <param name="pretrained">The pre-trained model θ_0.</param>
    /// <returns>The upscaler.</returns>
    public static ModelUpscaler For(ClipVisionModel pretrained)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        return new ModelUpscaler(null, pretrained, null);
    }

    /// <summary>Starts an upscaler for a pre-trained model in a Hugging Face folder (config.json + safetensors).</summary>
    /// <param name="folder">The model folder.</param>
    /// <returns>The upscaler.</returns>
    public static ModelUpscaler ForFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        return new ModelUpscaler(null, null, folder);
    }

    /// <summary>Adds fine-tuned experts held in memory (not modified, not disposed).</summary>
    /// <param name="finetuned">The experts, in task order.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithExperts(params IEnumerable<ClipVisionModel> finetuned)
    {
        ArgumentNullException.ThrowIfNull(finetuned);
        ThrowIfPool();
        foreach (var expert in finetuned)
        {
            experts.Add(expert ?? throw new ArgumentException("An expert model is null.", nameof(finetuned)));
        }

        return this;
    }

    /// <summary>Adds fine-tuned experts stored as Hugging Face folders; each is read lazily, one tensor at a time.</summary>
    /// <param name="folders">The expert folders, in task order.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithExpertFolders(params IEnumerable<string> folders)
    {
        ArgumentNullException.ThrowIfNull(folders);
        ThrowIfPool();
        foreach (var folder in folders)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(folder, nameof(folders));
            experts.Add(folder);
        }

        return this;
    }

    /// <summary>Replaces every option at once (the options are copied).</summary>
    /// <param name="upscalerOptions">The options.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithOptions(ModelUpscalerOptions upscalerOptions)
    {
        ArgumentNullException.ThrowIfNull(upscalerOptions);
        options = upscalerOptions.Clone();
        return this;
    }

    /// <summary>
    /// Sets the logger that receives the build's phases and timings (information: start and end; debug: each phase and
    /// module). The default value is <see cref="NullLogger{T}.Instance"/>.
    /// </summary>
    /// <param name="upscalerLogger">The logger.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithLogger(ILogger upscalerLogger)
    {
        ArgumentNullException.ThrowIfNull(upscalerLogger);
        logger = upscalerLogger;
        return this;
    }

    /// <summary>Sets <see cref="ModelUpscalerOptions.RouterDepth"/>.</summary>
    /// <param name="depth">0, 1 or 2.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithRouterDepth(int depth)
    {
        options.RouterDepth = depth;
        return this;
    }

    /// <summary>Sets <see cref="ModelUpscalerOptions.InitLambda"/>.</summary>
    /// <param name="lambda">The initial routing weight and task-arithmetic scaling factor.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithInitLambda(double lambda)
    {
        options.InitLambda = lambda;
        return this;
    }

    /// <summary>Shares one router among all upscaled modules (E-WEMoE), optionally with a layer-position encoding.</summary>
    /// <param name="positionEncoding">Whether the router reads an 8-dimensional encoding of the layer index.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithSharedRouter(bool positionEncoding = false)
    {
        options.SharedRouter = true;
        options.PositionEncoding = positionEncoding;
        return this;
    }

    /// <summary>Sets how task vectors are stored (<see cref="TaskVectorStorageOptions.Dense"/>, <c>Sparse(p)</c>, <c>LowRank(k)</c>).</summary>
    /// <param name="storage">The storage options.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithTaskVectorStorage(TaskVectorStorageOptions storage)
    {
        ArgumentNullException.ThrowIfNull(storage);
        options.TaskVectorStorage = storage;
        return this;
    }

    /// <summary>
    /// Stores the task vectors in <paramref name="dtype"/> (<see cref="TaskVectorStorageOptions.DType"/>): float16 or
    /// bfloat16 halve their bytes, float32 (the default) keeps them as computed; the storages compute in float32 either
    /// way. Applies to the storage options set so far: a later <see cref="WithTaskVectorStorage"/> replaces them with its
    /// own (whose <see cref="TaskVectorStorageOptions.DType"/> then counts).
    /// </summary>
    /// <param name="dtype">Float32, Float16 or BFloat16.</param>
    /// <returns>This upscaler.</returns>
    /// <exception cref="ArgumentException"><paramref name="dtype"/> is not a storage dtype.</exception>
    public ModelUpscaler WithTaskVectorDType(ScalarType dtype)
    {
        var storage = (options.TaskVectorStorage ?? TaskVectorStorageOptions.Dense()).Copy();
        storage.DType = dtype;
        storage.Validate();
        options.TaskVectorStorage = storage;
        return this;
    }

    /// <summary>Upscales only the given encoder layers (0-based).</summary>
    /// <param name="layers">The layer indices.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithLayers(params IEnumerable<int> layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        options.Layers = layers.ToArray();
        return this;
    }

    /// <summary>Chooses which modules of each layer are upscaled.</summary>
    /// <param name="targets">MLP (the default), attention, or both.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithTargets(UpscaleTargets targets)
    {
        options.Targets = targets;
        return this;
    }

    /// <summary>
    /// Keeps the pre-trained <c>visual_projection</c> (FusionBench's recipe) instead of merging it by task arithmetic with
    /// the other non-upscaled weights; see <see cref="ModelUpscalerOptions.PretrainedProjection"/>.
    /// </summary>
    /// <param name="pretrained">Whether to keep the pre-trained projection. The default value is <see langword="true"/>.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithPretrainedProjection(bool pretrained = true)
    {
        options.PretrainedProjection = pretrained;
        return this;
    }

    /// <summary>Sets the seed of the routers' initialisation.</summary>
    /// <param name="seed">The seed.</param>
    /// <returns>This upscaler.</returns>
    public ModelUpscaler WithSeed(long seed)
    {
        options.Seed = seed;
        return this;
    }

    /// <summary>Builds the upscaled model.</summary>
    /// <returns>The upscaled model; the caller owns and disposes it.</returns>
    /// <exception cref="ArgumentException">No experts, a bad option, or a layer index out of range.</exception>
    /// <exception cref="InvalidDataException">An expert differs from the pre-trained model in architecture, key set or shape, or a weight is NaN/Inf; the message names the model and the tensor.</exception>
    public UpscaledModel Build()
    {
        options.Validate();
        var (model, modelPool, layers, sharedRouter) = BuildCore(preferenceRouted: false);
        return new UpscaledModel(
            model,
            modelPool,
            layers.Select(l => new UpscaledModule(l.Path, l.Layer, l.Target, (Moe.WeightEnsemblingMoE)l.Module)).ToList(),
            sharedRouter,
            options.Clone());
    }

    /// <summary>
    /// Builds a Pareto (PWEMoE) model: every selected module becomes a <see cref="ParetoWeightEnsemblingModule"/> whose
    /// router reads a preference vector over the tasks, with <see cref="ModelUpscalerOptions.RouterDepth"/> 1 or 2 and
    /// <see cref="ModelUpscalerOptions.InitLambda"/> as the routers' last bias; every other parameter is merged by task
    /// arithmetic as for <see cref="Build"/>.
    /// </summary>
    /// <returns>The Pareto model; the caller owns and disposes it.</returns>
    /// <exception cref="ArgumentException">No experts, a bad option (router depth 0, a shared router or a position encoding, which preference routers do not have), or a layer index out of range.</exception>
    /// <exception cref="InvalidDataException">An expert differs from the pre-trained model; the message names the model and the tensor.</exception>
    public ParetoUpscaledModel BuildPareto()
    {
        options.Validate();
        if (options.RouterDepth is < 1 or > 2)
        {
            throw new ArgumentException(
                $"A preference router has 1 or 2 layers; {nameof(ModelUpscalerOptions.RouterDepth)} is {options.RouterDepth}.", nameof(ModelUpscalerOptions.RouterDepth));
        }

        if (options.SharedRouter || options.PositionEncoding)
        {
            throw new ArgumentException(
                $"Preference routers are per module: {nameof(ModelUpscalerOptions.SharedRouter)} and {nameof(ModelUpscalerOptions.PositionEncoding)} must be off.", nameof(ModelUpscalerOptions.SharedRouter));
        }

        var (model, modelPool, layers, _) = BuildCore(preferenceRouted: true);
        return new ParetoUpscaledModel(
            model,
            modelPool,
            layers.Select(l => new ParetoUpscaledModule(l.Path, l.Layer, l.Target, (ParetoWeightEnsemblingModule)l.Module)).ToList(),
            options.Clone());
    }

    // The build steps every upscaled model shares: read the pool, merge the base, replace each selected module by a
    // weight-ensembling layer whose router reads the tokens (WEMoE family) or a preference (PWEMoE); only routers train.
    private (ClipVisionModel Model, ModelPool Pool, List<(string Path, int Layer, UpscaleTargets Target, WeightEnsemblingLayer Module)> Layers, Router? SharedRouter) BuildCore(bool preferenceRouted)
    {
        var checkStarted = Stopwatch.StartNew();
        var modelPool = ResolvePool();
        var config = modelPool.Config;
        int layerCount = config.NumHiddenLayers;
        int[] layers = options.Layers?.ToArray() ?? Enumerable.Range(0, layerCount).ToArray();
        var badLayer = layers.FirstOrDefault(l => l >= layerCount, -1);
        if (badLayer >= 0)
        {
            throw new ArgumentException($"Layer {badLayer} does not exist: the model has {layerCount} encoder layers.", nameof(ModelUpscalerOptions.Layers));
        }

        Array.Sort(layers);
        Log.UpscaleStarting(logger, modelPool.ExpertCount, string.Join(",", layers), options.Targets.ToString(), options.RouterDepth, options.TaskVectorStorage.Kind.ToString());
        var total = Stopwatch.StartNew();
        var phase = Stopwatch.StartNew();
        var result = new ClipVisionModel(config, modelPool.HasProjection);
        var upscaled = new List<(string Path, int Layer, UpscaleTargets Target, WeightEnsemblingLayer Module)>();
        Router? sharedRouter = null;
        try
        {
            Log.UpscalePhase(logger, "check experts", checkStarted.Elapsed.TotalMilliseconds);
            phase.Restart();
            var prefixes = layers.SelectMany(l => ModulePaths(l)).ToArray();
            bool IsUpscaled(string key) => prefixes.Any(p => key.StartsWith(p + ".", StringComparison.Ordinal));
            bool KeepsPretrained(string key) => IsUpscaled(key) || (options.PretrainedProjection && key == ProjectionKey);
            LoadBaseWeights(result, modelPool, KeepsPretrained);
            Log.UpscalePhase(logger, "merge base weights", phase.Elapsed.TotalMilliseconds);

            using var generator = new Generator(unchecked((ulong)options.Seed));
            foreach (int layer in layers)
            {
                var encoderLayer = result.Layers[layer];
                foreach (var (target, path) in ModuleTargets(layer))
                {
                    phase.Restart();
                    var baseModule = target == UpscaleTargets.Mlp ? encoderLayer.Mlp : encoderLayer.SelfAttention;
                    var taskVectors = BuildTaskVectors(modelPool, path, baseModule);
                    WeightEnsemblingLayer module = preferenceRouted
                        ? new ParetoWeightEnsemblingModule(
                            baseModule,
                            taskVectors,
                            PreferenceRouter.Create(options.RouterDepth, taskVectors.TaskCount, options.InitLambda, generator))
                        : InputRoutedLayer(baseModule, taskVectors, layer, generator, ref sharedRouter);
                    if (target == UpscaleTargets.Mlp)
                    {
                        encoderLayer.Mlp = module;
                    }
                    else
                    {
                        encoderLayer.SelfAttention = module;
                    }

                    upscaled.Add((path, layer, target, module));
                    Log.ModuleUpscaled(logger, path, phase.Elapsed.TotalMilliseconds);
                }
            }

            // Only the routers train: everything else (merged by task arithmetic, or frozen θ_0 and task vectors) is fixed.
            foreach (var parameter in result.parameters())
            {
                parameter.requires_grad = false;
            }

            foreach (var module in upscaled)
            {
                foreach (var parameter in module.Module.GateModule.parameters())
                {
                    parameter.requires_grad = true;
                }
            }

            Log.UpscaleCompleted(logger, upscaled.Count, total.Elapsed.TotalMilliseconds);
            return (result, modelPool, upscaled, sharedRouter);
        }
        catch
        {
            result.Dispose();
            sharedRouter?.Dispose();
            throw;
        }
    }

    // A WEMoE layer: its own router, or the one router every layer shares (E-WEMoE, created at the first layer).
    private Moe.WeightEnsemblingMoE InputRoutedLayer(nn.Module baseModule, TaskVectorDictionary taskVectors, int layer, Generator generator, ref Router? sharedRouter)
    {
        int hidden = WeightEnsemblingLayer.ValidateMergeable(baseModule, taskVectors);
        if (options.SharedRouter && sharedRouter is null)
        {
            int inputDimension = hidden + (options.PositionEncoding ? Router.PositionEncodingDimension : 0);
            sharedRouter = Router.Create(options.RouterDepth, inputDimension, taskVectors.TaskCount, options.InitLambda, generator);
        }

        var gate = sharedRouter ?? Router.Create(options.RouterDepth, hidden, taskVectors.TaskCount, options.InitLambda, generator);
        return new Moe.WeightEnsemblingMoE(
            baseModule,
            taskVectors,
            gate,
            ownsGate: sharedRouter is null,
            layerIndex: options.PositionEncoding ? layer : null);
    }

    private const string ProjectionKey = "visual_projection.weight";

    private void ThrowIfPool()
    {
        if (pool is not null)
        {
            throw new InvalidOperationException("This upscaler reads its experts from a model pool: add experts to the pool, not to the upscaler.");
        }
    }

    // The pool given to For(pool), or one made from the models and folders given to the other entry points.
    private ModelPool ResolvePool()
    {
        if (pool is not null)
        {
            return pool;
        }

        if (experts.Count == 0)
        {
            throw new ArgumentException("At least one fine-tuned expert is needed: call WithExperts or WithExpertFolders.");
        }

        var pretrained = pretrainedModel is not null
            ? ModelSource.FromModel(pretrainedModel, "the pre-trained model")
            : ModelSource.FromFolder(pretrainedFolder!, "the pre-trained model");
        var names = experts
            .Select((expert, t) => expert is string folder ? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder))) : $"expert_{t}")
            .ToArray();
        if (names.Distinct(StringComparer.Ordinal).Count() != names.Length)
        {
            names = names.Select((_, t) => $"expert_{t}").ToArray();
        }

        var sources = experts
            .Select((expert, t) => expert is ClipVisionModel model
                ? ModelSource.FromModel(model, $"expert {t}")
                : ModelSource.FromFolder((string)expert, $"expert {t}"))
            .ToList();
        return ModelPool.FromSources(pretrained, sources, names);
    }

    private IEnumerable<(UpscaleTargets Target, string Path)> ModuleTargets(int layer)
    {
        if (options.Targets.HasFlag(UpscaleTargets.Attention))
        {
            yield return (UpscaleTargets.Attention, $"vision_model.encoder.layers.{layer}.self_attn");
        }

        if (options.Targets.HasFlag(UpscaleTargets.Mlp))
        {
            yield return (UpscaleTargets.Mlp, $"vision_model.encoder.layers.{layer}.mlp");
        }
    }

    private IEnumerable<string> ModulePaths(int layer) => ModuleTargets(layer).Select(t => t.Path);

    // Upscaled modules (and the projection, if so asked) keep θ_0; every other tensor becomes θ_0 + λ Σ_t (θ_t − θ_0),
    // read from the pool.
    private void LoadBaseWeights(ClipVisionModel result, ModelPool modelPool, Func<string, bool> keepsPretrained)
    {
        var targets = result.state_dict();
        using var noGrad = no_grad();
        var upscaledKeys = modelPool.Keys.Where(keepsPretrained).ToArray();
        var mergedKeys = modelPool.Keys.Where(k => !keepsPretrained(k)).ToArray();
        // One after the other, so that θ_0 of the upscaled modules is copied and released before task arithmetic runs.
        foreach (var read in new Func<Dictionary<string, Tensor>>[] { () => modelPool.LoadPretrained(upscaledKeys), () => modelPool.TaskArithmetic(options.InitLambda, mergedKeys) })
        {
            foreach (var (key, tensor) in read())
            {
                targets[key].copy_(tensor);
                tensor.Dispose();
            }
        }
    }

    private TaskVectorDictionary BuildTaskVectors(ModelPool modelPool, string path, nn.Module baseModule)
    {
        var localNames = baseModule.named_parameters().Select(p => p.name).ToArray();
        var keys = localNames.Select(n => $"{path}.{n}").ToArray();
        var theta0 = Local(modelPool.LoadPretrained(keys), path);
        try
        {
            return TaskVectorDictionary.Create(theta0, modelPool.ExpertWeights(keys).Select(e => (IReadOnlyDictionary<string, Tensor>)Local(e, path)), options.TaskVectorStorage);
        }
        finally
        {
            foreach (var tensor in theta0.Values)
            {
                tensor.Dispose();
            }
        }
    }

    // The same tensors keyed by their name inside the module at path (no copies).
    private static Dictionary<string, Tensor> Local(IReadOnlyDictionary<string, Tensor> tensors, string path) =>
        tensors.ToDictionary(t => t.Key[(path.Length + 1)..], t => t.Value, StringComparer.Ordinal);
}
