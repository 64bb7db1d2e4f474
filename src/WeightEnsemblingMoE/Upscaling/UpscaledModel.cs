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

    internal UpscaledModel(ClipVisionModel model, IReadOnlyList<UpscaledModule> modules, Router? sharedRouter, ModelUpscalerOptions options)
    {
        Model = model;
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
