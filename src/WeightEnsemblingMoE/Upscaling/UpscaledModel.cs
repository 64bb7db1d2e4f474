using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Moe;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Upscaling;

/// <summary>
/// A CLIP vision model whose selected modules are weight-ensembling mixtures of experts (WEMoE), as built by
/// <see cref="ModelUpscaler"/>. <see cref="Model"/> is an ordinary <see cref="ClipVisionModel"/> whose state-dict keys are
/// those of the pre-trained model plus, under each upscaled module, <c>gate.*</c>, <c>base_model.*</c> and
/// <c>task_vectors.*</c>, as in FusionBench.
/// </summary>
public sealed class UpscaledModel : IDisposable
{
    private readonly Router? sharedRouter;
    private bool disposed;

    private readonly ModelPool pool;

    internal UpscaledModel(ClipVisionModel model, ModelPool pool, IReadOnlyList<UpscaledModule> modules, Router? sharedRouter, ModelUpscalerOptions options)
    {
        Model = model;
        this.pool = pool;
        Modules = modules;
        this.sharedRouter = sharedRouter;
        Options = options;
    }

    /// <summary>The upscaled CLIP vision model; run it, move it with <c>to(device)</c>, or read its state dict.</summary>
    public ClipVisionModel Model { get; }

    /// <summary>The mixture-of-experts modules, in layer order.</summary>
    public IReadOnlyList<UpscaledModule> Modules { get; }

    /// <summary>The options the model was built with.</summary>
    public ModelUpscalerOptions Options { get; }

    /// <summary>The experts' names, in task order (the order of the routing weights).</summary>
    public IReadOnlyList<string> ExpertNames => pool.ExpertNames;

    /// <summary>The method: <c>WEMoE</c> (a router per module) or <c>E-WEMoE</c> (one shared router).</summary>
    public string Method => Options.SharedRouter ? "E-WEMoE" : "WEMoE";

    /// <summary>The number of experts (tasks) T.</summary>
    public int TaskCount => Modules[0].Module.TaskCount;

    /// <summary>
    /// How every mixture-of-experts module routes: per sample (evaluation) or with the batch-mean routing (test-time
    /// adaptation). Setting it sets every module; reading it throws if modules were set to different modes by hand.
    /// </summary>
    public RoutingMode RoutingMode
    {
        get
        {
            var mode = Modules[0].Module.RoutingMode;
            if (Modules.Any(m => m.Module.RoutingMode != mode))
            {
                throw new InvalidOperationException("The mixture-of-experts modules are in different routing modes.");
            }

            return mode;
        }

        set
        {
            foreach (var module in Modules)
            {
                module.Module.RoutingMode = value;
            }
        }
    }

    /// <summary>Runs the model: <c>Model.forward(pixelValues)</c>.</summary>
    /// <param name="pixelValues">Images, shape [B, C, H, W].</param>
    /// <returns>The model's outputs.</returns>
    public ClipVisionOutput Forward(Tensor pixelValues) => Model.forward(pixelValues);

    /// <summary>The distinct trainable parameters (the routers'), each once even when the router is shared.</summary>
    /// <returns>The parameters, for an optimizer.</returns>
    public IReadOnlyList<Parameter> TrainableParameters() =>
        Moe.WeightEnsemblingMoE.DistinctTrainableParameters(Modules.Select(m => (nn.Module)m.Module));

    /// <summary>
    /// The routers' parameters by full state-dict key (e.g. <c>vision_model.encoder.layers.0.mlp.gate.fc1.weight</c>), as
    /// detached clones the caller owns: what a router checkpoint holds. A shared router appears under every module.
    /// </summary>
    /// <returns>The router state dict.</returns>
    public Dictionary<string, Tensor> RouterStateDict() => UpscaledModelParts.RouterStateDict(Gates());

    /// <summary>Loads router parameters saved by <see cref="RouterStateDict"/> (strict: every router key, nothing else).</summary>
    /// <param name="routers">The router state dict.</param>
    /// <exception cref="StateDictLoadException">A key is missing, unexpected or of the wrong shape.</exception>
    public void LoadRouterStateDict(IReadOnlyDictionary<string, Tensor> routers) => UpscaledModelParts.LoadRouterStateDict(Gates(), routers);

    /// <summary>
    /// The configuration <see cref="SavePretrained"/> writes: the method, the options, the experts' names and the
    /// fingerprints of θ_0 and every task vector (computed once per pool by one streaming pass over the weights).
    /// </summary>
    /// <returns>The configuration.</returns>
    public UpscaledModelConfig Describe()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        return UpscaledModelConfig.Describe(Method, Options, Modules.Select(m => m.LayerIndex).Distinct().ToArray(), pool.ExpertNames, pool.Fingerprint());
    }

    /// <summary>
    /// Saves what training changed, like peft's <c>save_pretrained</c>: <see cref="UpscaledModelConfig.FileName"/>
    /// (everything needed to rebuild this model from its pool, and to refuse another pool) and the router weights in
    /// safetensors (kilobytes to megabytes; θ_0 and the task vectors stay in the pool). The configuration is written last
    /// and names the weights by hash, so a save killed part-way leaves the previous save intact.
    /// </summary>
    /// <param name="folder">The folder, created if needed; an earlier save in it is replaced.</param>
    /// <exception cref="InvalidDataException">A router weight is NaN or Inf (nothing is written).</exception>
    public void SavePretrained(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ObjectDisposedException.ThrowIf(disposed, this);
        UpscaledModelParts.SaveRouters(folder, Describe(), RouterStateDict());
    }

    /// <summary>
    /// Loads routers saved by <see cref="SavePretrained"/> into this model, after checking that they were saved from a model
    /// like this one over the same pool; the model is unchanged when loading fails.
    /// </summary>
    /// <param name="folder">The saved folder.</param>
    /// <exception cref="InvalidDataException">
    /// The saved model differs (method, router depth, shared or per-layer routers, storage, layers, λ, θ_0, or experts
    /// reordered, missing, extra or with other weights), the weights do not match the configuration, or a weight is NaN
    /// or Inf; the message names the folder and every difference.
    /// </exception>
    public void LoadPretrained(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ObjectDisposedException.ThrowIf(disposed, this);
        UpscaledModelParts.LoadSaved(folder, Describe(), LoadRouterStateDict);
    }

    /// <summary>
    /// Rebuilds a model saved by <see cref="SavePretrained"/> over <paramref name="modelPool"/>: the pool is checked against
    /// the saved configuration first (experts' names and order, fingerprints of θ_0 and every task vector), then the model
    /// is upcycled with the saved options and the routers are loaded.
    /// </summary>
    /// <param name="folder">The saved folder.</param>
    /// <param name="modelPool">The pool of the pre-trained model and experts the routers were trained on.</param>
    /// <returns>The model; the caller owns it.</returns>
    /// <exception cref="InvalidDataException">The folder is not a saved WEMoE / E-WEMoE model, or the pool differs; the message names every difference.</exception>
    public static UpscaledModel FromPretrained(string folder, ModelPool modelPool) =>
        UpscaledModelParts.FromPretrained(folder, modelPool, ["WEMoE", "E-WEMoE"], u => u.Build(), (model, path) => model.LoadPretrained(path));

    /// <summary>The routing weights [B, T] of the last forward pass, by module path (absent before the first forward).</summary>
    /// <returns>The routing weights, owned by the modules: copy them to keep them past the next forward pass.</returns>
    public IReadOnlyDictionary<string, Tensor> LastRoutingWeights() =>
        Modules.Where(m => m.Module.LastRoutingWeights is not null)
            .ToDictionary(m => m.Path, m => m.Module.LastRoutingWeights!, StringComparer.Ordinal);

    /// <summary>Parameter counts of the upscaled model: trainable (routers), total (with task vectors) and bytes.</summary>
    /// <returns>The counts.</returns>
    public ParameterCount CountParameters() => ParameterCount.Of(Model);

    /// <summary>
    /// Merges every module at one fixed routing vector r (θ_0 + Σ_t r_t τ_t) and returns a plain CLIP vision model with no
    /// mixture-of-experts overhead; its outputs equal this model's when every router outputs r.
    /// </summary>
    /// <param name="routing">The routing vector, shape [T].</param>
    /// <returns>A new plain model the caller owns.</returns>
    public ClipVisionModel MergeAndUnload(Tensor routing)
    {
        ArgumentNullException.ThrowIfNull(routing);
        return MergeAndUnload(Modules.ToDictionary(m => m.Path, _ => routing, StringComparer.Ordinal));
    }

    /// <summary>
    /// Merges and unloads with each module's own input-independent routing: valid when the routers have no layers
    /// (depth 0, one learned vector per module, as AdaMerging-style layer-wise merging).
    /// </summary>
    /// <returns>A new plain model the caller owns.</returns>
    /// <exception cref="InvalidOperationException">The routers depend on their input: pass a routing vector instead.</exception>
    public ClipVisionModel MergeAndUnload()
    {
        if (Options.RouterDepth != 0)
        {
            throw new InvalidOperationException(
                $"The routers have {Options.RouterDepth} layer(s), so routing depends on the input; pass the routing vector to merge at.");
        }

        // No dispose scope here: the new model's parameters must outlive this call.
        var routings = Modules.ToDictionary(m => m.Path, m => m.Module.Gate.parameters().Single().detach(), StringComparer.Ordinal);
        try
        {
            return MergeAndUnload(routings);
        }
        finally
        {
            foreach (var routing in routings.Values)
            {
                routing.Dispose();
            }
        }
    }

    /// <summary>Merges each module at its own routing vector (by module path) and returns a plain CLIP vision model.</summary>
    /// <param name="routings">A routing vector [T] for every module path in <see cref="Modules"/>.</param>
    /// <returns>A new plain model the caller owns.</returns>
    /// <exception cref="ArgumentException">A module has no routing vector, or a vector has the wrong shape.</exception>
    public ClipVisionModel MergeAndUnload(IReadOnlyDictionary<string, Tensor> routings)
    {
        ArgumentNullException.ThrowIfNull(routings);
        ObjectDisposedException.ThrowIf(disposed, this);
        var merges = new List<(string Path, Func<Dictionary<string, Tensor>> MergedWeights)>();
        foreach (var module in Modules)
        {
            if (!routings.TryGetValue(module.Path, out var routing))
            {
                throw new ArgumentException($"No routing vector for module '{module.Path}'.", nameof(routings));
            }

            var device = module.Module.BaseModel.parameters().First().device;
            merges.Add((module.Path, () => module.Module.MergedWeights(routing.detach().to(ScalarType.Float32, device))));
        }

        return UpscaledModelParts.MergeAndUnload(Model, merges);
    }

    /// <summary>Disposes the model, its mixture-of-experts modules and a shared router.</summary>
    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        Model.Dispose();
        sharedRouter?.Dispose();
    }

    private List<(string Path, nn.Module Gate)> Gates() => Modules.Select(m => (m.Path, (nn.Module)m.Module.Gate)).ToList();
}
