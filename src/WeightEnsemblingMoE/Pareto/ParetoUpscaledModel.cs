using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Pareto;

/// <summary>
/// A CLIP vision model whose selected modules are <see cref="ParetoWeightEnsemblingModule"/>s (PWEMoE), as built by
/// <see cref="ModelUpscaler.BuildPareto"/>: one model for the whole Pareto set. Set a preference over the tasks with
/// <see cref="SetPreference"/>, run it, or merge it at a preference into a plain model with <see cref="MergeAndUnload"/>.
/// </summary>
public sealed class ParetoUpscaledModel : IDisposable
{
    private bool disposed;

    private readonly ModelPool pool;

    internal ParetoUpscaledModel(ClipVisionModel model, ModelPool pool, IReadOnlyList<ParetoUpscaledModule> modules, ModelUpscalerOptions options)
    {
        Model = model;
        this.pool = pool;
        Modules = modules;
        Options = options;
    }

    /// <summary>The upscaled CLIP vision model; its state dict holds <c>gate.*</c>, <c>base_model.*</c> and <c>task_vectors.*</c> under each upscaled module.</summary>
    public ClipVisionModel Model { get; }

    /// <summary>The Pareto modules, in layer order.</summary>
    public IReadOnlyList<ParetoUpscaledModule> Modules { get; }

    /// <summary>The options the model was built with.</summary>
    public ModelUpscalerOptions Options { get; }

    /// <summary>The experts' names, in task order (the order of preference entries).</summary>
    public IReadOnlyList<string> ExpertNames => pool.ExpertNames;

    /// <summary>The number of tasks T.</summary>
    public int TaskCount => Modules[0].Module.TaskCount;

    /// <summary>The current preference (that of the first module), or <see langword="null"/> when none is set.</summary>
    public IReadOnlyList<double>? Preference => Modules[0].Module.Preference;

    /// <summary>Sets the preference on every module; each drops its cached merged weights if the preference changed.</summary>
    /// <param name="preference">T finite, non-negative entries summing to 1 (within 1e-4).</param>
    /// <exception cref="ArgumentException">The preference has the wrong length, a negative or non-finite entry, or does not sum to 1.</exception>
    public void SetPreference(IReadOnlyList<double> preference)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var checkedPreference = Preferences.Check(preference, TaskCount, nameof(preference));
        foreach (var module in Modules)
        {
            module.Module.SetPreference(checkedPreference);
        }
    }

    /// <summary>Removes the preference from every module.</summary>
    public void ClearPreference()
    {
        foreach (var module in Modules)
        {
            module.Module.ClearPreference();
        }
    }

    /// <summary>Runs the model at the current preference: <c>Model.forward(pixelValues)</c>.</summary>
    /// <param name="pixelValues">Images, shape [B, C, H, W].</param>
    /// <returns>The model's outputs.</returns>
    /// <exception cref="InvalidOperationException">No preference is set.</exception>
    public ClipVisionOutput Forward(Tensor pixelValues) => Model.forward(pixelValues);

    /// <summary>The routers' parameters, for an optimizer.</summary>
    /// <returns>The trainable parameters in module order.</returns>
    public IReadOnlyList<Parameter> TrainableParameters() =>
        Moe.WeightEnsemblingMoE.DistinctTrainableParameters(Modules.Select(m => (nn.Module)m.Module));

    /// <summary>The routers' parameters by full state-dict key (e.g. <c>vision_model.encoder.layers.0.mlp.gate.fc1.weight</c>), as detached clones the caller owns.</summary>
    /// <returns>The router state dict: what a router checkpoint holds.</returns>
    public Dictionary<string, Tensor> RouterStateDict() => UpscaledModelParts.RouterStateDict(Gates());

    /// <summary>Loads router parameters saved by <see cref="RouterStateDict"/> (strict) and drops every cached merge.</summary>
    /// <param name="routers">The router state dict.</param>
    /// <exception cref="StateDictLoadException">A key is missing, unexpected or of the wrong shape.</exception>
    public void LoadRouterStateDict(IReadOnlyDictionary<string, Tensor> routers)
    {
        UpscaledModelParts.LoadRouterStateDict(Gates(), routers);
        foreach (var module in Modules)
        {
            module.Module.ClearCache();
        }
    }

    /// <summary>The configuration <see cref="SavePretrained"/> writes (method <c>PWEMoE</c>, options, experts, fingerprints).</summary>
    /// <returns>The configuration.</returns>
    public UpscaledModelConfig Describe()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        return UpscaledModelConfig.Describe("PWEMoE", Options, Modules.Select(m => m.LayerIndex).Distinct().ToArray(), pool.ExpertNames, pool.Fingerprint());
    }

    /// <summary>
    /// Saves the preference routers with their configuration, as <see cref="UpscaledModel.SavePretrained"/> does: a
    /// folder <see cref="FromPretrained"/> rebuilds the whole Pareto set from, given the same pool.
    /// </summary>
    /// <param name="folder">The folder, created if needed; an earlier save in it is replaced.</param>
    /// <exception cref="InvalidDataException">A router weight is NaN or Inf (nothing is written).</exception>
    public void SavePretrained(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ObjectDisposedException.ThrowIf(disposed, this);
        UpscaledModelParts.SaveRouters(folder, Describe(), RouterStateDict());
    }

    /// <summary>Loads preference routers saved by <see cref="SavePretrained"/> into this model after checking that they fit.</summary>
    /// <param name="folder">The saved folder.</param>
    /// <exception cref="InvalidDataException">The saved model differs from this one; the message names every difference.</exception>
    public void LoadPretrained(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ObjectDisposedException.ThrowIf(disposed, this);
        UpscaledModelParts.LoadSaved(folder, Describe(), LoadRouterStateDict);
    }

    /// <summary>Rebuilds a PWEMoE model saved by <see cref="SavePretrained"/> over <paramref name="modelPool"/>, refusing a pool that differs.</summary>
    /// <param name="folder">The saved folder.</param>
    /// <param name="modelPool">The pool the routers were trained on.</param>
    /// <returns>The model; the caller owns it.</returns>
    /// <exception cref="InvalidDataException">The folder is not a saved PWEMoE model, or the pool differs; the message names every difference.</exception>
    public static ParetoUpscaledModel FromPretrained(string folder, ModelPool modelPool) =>
        UpscaledModelParts.FromPretrained(folder, modelPool, ["PWEMoE"], u => u.BuildPareto(), (model, path) => model.LoadPretrained(path));

    /// <summary>Parameter counts: trainable (routers), total (with task vectors) and bytes.</summary>
    /// <returns>The counts.</returns>
    public ParameterCount CountParameters() => ParameterCount.Of(Model);

    /// <summary>
    /// Merges every module at one preference (θ_0 + Σ_t r_t τ_t with r = router(p), per module) and returns a plain CLIP
    /// vision model whose outputs equal this model's at that preference.
    /// </summary>
    /// <param name="preference">The preference.</param>
    /// <returns>A new plain model the caller owns.</returns>
    /// <exception cref="ArgumentException">The preference is invalid.</exception>
    public ClipVisionModel MergeAndUnload(IReadOnlyList<double> preference)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var checkedPreference = Preferences.Check(preference, TaskCount, nameof(preference));
        return UpscaledModelParts.MergeAndUnload(
            Model,
            Modules.Select(m => (m.Path, (Func<Dictionary<string, Tensor>>)(() => m.Module.MergedWeights(checkedPreference)))).ToList());
    }

    /// <summary>Disposes the model and its Pareto modules.</summary>
    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        Model.Dispose();
    }

    private List<(string Path, nn.Module Gate)> Gates() => Modules.Select(m => (m.Path, (nn.Module)m.Module.Gate)).ToList();
}
