using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Moe;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Training;
using static TorchSharp.torch;

namespace WeightEnsembling.Upscaling;

/// <summary>
/// What every upscaled CLIP vision model shares, whatever its routers read: the model, the pool it was built from, the
/// <see cref="WeightEnsemblingLayer"/>s that replaced its selected modules, the routers' state dict, saving and loading
/// like an adapter (<see cref="SavePretrained"/>, <see cref="LoadPretrained"/>), parameter counts and merge-and-unload.
/// <see cref="UpscaledModel"/> (WEMoE, E-WEMoE, low-rank and sparse variants: routers read the tokens) and
/// <see cref="Pareto.ParetoUpscaledModel"/> (PWEMoE: routers read a preference) add what their routing needs. Both are
/// <see cref="IAdaptableModel"/>s: <see cref="AdaptationTrainer"/> trains their routers directly.
/// </summary>
public abstract class UpscaledModelBase : IAdaptableModel, IDisposable
{
    private readonly ModelPool pool;
    private readonly IReadOnlyList<(string Path, int LayerIndex, WeightEnsemblingLayer Layer)> layers;
    private readonly IDisposable? sharedRouter;

    private protected UpscaledModelBase(
        ClipVisionModel model,
        ModelPool pool,
        IReadOnlyList<(string Path, int LayerIndex, WeightEnsemblingLayer Layer)> layers,
        IDisposable? sharedRouter,
        ModelUpscalerOptions options)
    {
        Model = model;
        this.pool = pool;
        this.layers = layers;
        this.sharedRouter = sharedRouter;
        Options = options;
    }

    /// <summary>The upscaled CLIP vision model; run it, move it with <c>to(device)</c>, or read its state dict (FusionBench's keys: <c>gate.*</c>, <c>base_model.*</c> and <c>task_vectors.*</c> under each upscaled module).</summary>
    public ClipVisionModel Model { get; }

    /// <summary>The options the model was built with.</summary>
    public ModelUpscalerOptions Options { get; }

    /// <summary>The experts' names, in task order (the order of the routing weights).</summary>
    public IReadOnlyList<string> ExpertNames => pool.ExpertNames;

    /// <summary>The method name written into saved folders and reports: <c>WEMoE</c>, <c>E-WEMoE</c> or <c>PWEMoE</c>.</summary>
    public abstract string Method { get; }

    /// <summary>The number of experts (tasks) T.</summary>
    public int TaskCount => layers[0].Layer.TaskCount;

    /// <summary>Whether <see cref="Dispose"/> has run.</summary>
    private protected bool IsDisposed { get; private set; }

    /// <summary>The image features the task heads read: <see cref="ClipVisionModel.GetImageFeatures"/> of <see cref="Model"/>.</summary>
    /// <param name="pixelValues">Images [B, C, H, W]; not disposed.</param>
    /// <returns>Features [B, D], differentiable with respect to the routers.</returns>
    public Tensor Features(Tensor pixelValues) => Model.GetImageFeatures(pixelValues);

    /// <summary>
    /// Prepares the model for training or evaluation: the WEMoE family routes with the batch-mean routing while training
    /// (FusionBench's recipe) and per sample otherwise; PWEMoE's routing does not depend on the input.
    /// </summary>
    /// <param name="training">Whether the model is about to be trained.</param>
    public virtual void SetTraining(bool training)
    {
    }

    /// <summary>Runs the model: <c>Model.forward(pixelValues)</c>.</summary>
    /// <param name="pixelValues">Images, shape [B, C, H, W].</param>
    /// <returns>The model's outputs.</returns>
    public ClipVisionOutput Forward(Tensor pixelValues) => Model.forward(pixelValues);

    /// <summary>The distinct trainable parameters (the routers'), each once even when the router is shared.</summary>
    /// <returns>The parameters, for an optimizer.</returns>
    public IReadOnlyList<Parameter> TrainableParameters() => NamedTrainableParameters().Select(p => p.Value).ToList();

    /// <summary>
    /// The distinct router parameters, each named by the first state-dict key it has (e.g.
    /// <c>vision_model.encoder.layers.0.mlp.gate.fc1.weight</c>); a shared router appears once. The model owns them.
    /// </summary>
    /// <returns>The named parameters, in module order.</returns>
    public IReadOnlyList<KeyValuePair<string, Parameter>> NamedTrainableParameters()
    {
        var seen = new HashSet<IntPtr>();
        var result = new List<KeyValuePair<string, Parameter>>();
        foreach (var (path, gate) in Gates())
        {
            foreach (var (name, parameter) in gate.named_parameters())
            {
                if (parameter.requires_grad && seen.Add(parameter.Handle))
                {
                    result.Add(KeyValuePair.Create($"{path}.gate.{name}", parameter));
                }
            }
        }

        return result;
    }

    /// <summary>
    /// The routers' parameters by full state-dict key (e.g. <c>vision_model.encoder.layers.0.mlp.gate.fc1.weight</c>), as
    /// detached clones the caller owns: what a router checkpoint holds. A shared router appears under every module.
    /// </summary>
    /// <returns>The router state dict.</returns>
    public Dictionary<string, Tensor> RouterStateDict() => UpscaledModelParts.RouterStateDict(Gates());

    /// <summary>
    /// Loads router parameters saved by <see cref="RouterStateDict"/> (strict: every router key, nothing else; a shared
    /// router must appear with the same values under every module).
    /// </summary>
    /// <param name="routers">The router state dict.</param>
    /// <exception cref="StateDictLoadException">A key is missing, unexpected or of the wrong shape.</exception>
    /// <exception cref="ArgumentException">A tensor is NaN or Inf, or the copies of a shared router differ.</exception>
    public void LoadRouterStateDict(IReadOnlyDictionary<string, Tensor> routers)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        UpscaledModelParts.LoadRouterStateDict(Gates(), routers);
        OnRoutersLoaded();
    }

    /// <summary>
    /// The configuration <see cref="SavePretrained"/> writes: the method, the options, the experts' names and the
    /// fingerprints of θ_0 and every task vector (computed once per pool by one streaming pass over the weights).
    /// </summary>
    /// <returns>The configuration.</returns>
    public UpscaledModelConfig Describe()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        return UpscaledModelConfig.Describe(Method, Options, layers.Select(l => l.LayerIndex).Distinct().ToArray(), pool.ExpertNames, pool.Fingerprint());
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
        ObjectDisposedException.ThrowIf(IsDisposed, this);
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
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        UpscaledModelParts.LoadSaved(folder, Describe(), LoadRouterStateDict);
    }

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
        return MergeAndUnload(layers.ToDictionary(l => l.Path, _ => routing, StringComparer.Ordinal));
    }

    /// <summary>Merges each module at its own routing vector (by module path) and returns a plain CLIP vision model.</summary>
    /// <param name="routings">A routing vector [T] for every upscaled module path.</param>
    /// <returns>A new plain model the caller owns.</returns>
    /// <exception cref="ArgumentException">A module has no routing vector, or a vector has the wrong shape or is not finite.</exception>
    public ClipVisionModel MergeAndUnload(IReadOnlyDictionary<string, Tensor> routings)
    {
        ArgumentNullException.ThrowIfNull(routings);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        var merges = new List<(string Path, Func<Dictionary<string, Tensor>> MergedWeights)>();
        foreach (var (path, _, layer) in layers)
        {
            if (!routings.TryGetValue(path, out var routing))
            {
                throw new ArgumentException($"No routing vector for module '{path}'.", nameof(routings));
            }

            var device = layer.BaseModel.parameters().First().device;
            merges.Add((path, () => layer.MergedWeights(routing.detach().to(ScalarType.Float32, device))));
        }

        return UpscaledModelParts.MergeAndUnload(Model, merges);
    }

    /// <summary>Disposes the model, its weight-ensembling layers and a shared router.</summary>
    public void Dispose()
    {
        if (IsDisposed)
        {
            return;
        }

        IsDisposed = true;
        Model.Dispose();
        sharedRouter?.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Merges every module with the weights a function of its layer gives, into a plain model.</summary>
    private protected ClipVisionModel MergeAndUnload(Func<WeightEnsemblingLayer, Dictionary<string, Tensor>> mergedWeights)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        return UpscaledModelParts.MergeAndUnload(
            Model,
            layers.Select(l => (l.Path, (Func<Dictionary<string, Tensor>>)(() => mergedWeights(l.Layer)))).ToList());
    }

    /// <summary>Called after router weights were loaded (e.g. to drop merged weights cached for the old routers).</summary>
    private protected virtual void OnRoutersLoaded()
    {
    }

    private List<(string Path, nn.Module Gate)> Gates() => layers.Select(l => (l.Path, (nn.Module)l.Layer.GateModule)).ToList();
}
