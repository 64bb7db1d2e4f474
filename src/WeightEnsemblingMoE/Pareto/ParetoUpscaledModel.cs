using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Moe;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Pareto;

/// <summary>
/// A CLIP vision model whose selected modules are <see cref="ParetoWeightEnsemblingModule"/>s (PWEMoE), as built by
/// <see cref="ModelUpscaler.BuildPareto"/>: one model for the whole Pareto set. Set a preference over the tasks with
/// <see cref="SetPreference"/>, run it, or merge it at a preference into a plain model with
/// <see cref="MergeAndUnload(IReadOnlyList{double})"/>.
/// </summary>
public sealed class ParetoUpscaledModel : UpscaledModelBase, IPreferenceConditionedModel
{
    internal ParetoUpscaledModel(ClipVisionModel model, ModelPool pool, IReadOnlyList<ParetoUpscaledModule> modules, ModelUpscalerOptions options)
        : base(model, pool, modules.Select(m => (m.Path, m.LayerIndex, (WeightEnsemblingLayer)m.Module)).ToList(), sharedRouter: null, options)
    {
        Modules = modules;
    }

    /// <summary>The Pareto modules, in layer order.</summary>
    public IReadOnlyList<ParetoUpscaledModule> Modules { get; }

    /// <summary>The method: <c>PWEMoE</c>.</summary>
    public override string Method => "PWEMoE";

    /// <summary>The current preference (that of the first module), or <see langword="null"/> when none is set.</summary>
    public IReadOnlyList<double>? Preference => Modules[0].Module.Preference;

    /// <summary>Sets the preference on every module; each drops its cached merged weights if the preference changed.</summary>
    /// <param name="preference">T finite, non-negative entries summing to 1 (within 1e-4).</param>
    /// <exception cref="ArgumentException">The preference has the wrong length, a negative or non-finite entry, or does not sum to 1.</exception>
    public void SetPreference(IReadOnlyList<double> preference)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
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

    /// <summary>Rebuilds a PWEMoE model saved by <see cref="UpscaledModelBase.SavePretrained"/> over <paramref name="modelPool"/>, refusing a pool that differs.</summary>
    /// <param name="folder">The saved folder.</param>
    /// <param name="modelPool">The pool the routers were trained on.</param>
    /// <returns>The model; the caller owns it.</returns>
    /// <exception cref="InvalidDataException">The folder is not a saved PWEMoE model, or the pool differs; the message names every difference.</exception>
    public static ParetoUpscaledModel FromPretrained(string folder, ModelPool modelPool) =>
        UpscaledModelParts.FromPretrained(folder, modelPool, ["PWEMoE"], u => u.BuildPareto());

    /// <summary>
    /// Merges every module at one preference (θ_0 + Σ_t r_t τ_t with r = router(p), per module) and returns a plain CLIP
    /// vision model whose outputs equal this model's at that preference.
    /// </summary>
    /// <param name="preference">The preference.</param>
    /// <returns>A new plain model the caller owns.</returns>
    /// <exception cref="ArgumentException">The preference is invalid.</exception>
    public ClipVisionModel MergeAndUnload(IReadOnlyList<double> preference)
    {
        var checkedPreference = Preferences.Check(preference, TaskCount, nameof(preference));
        return MergeAndUnload(layer => ((ParetoWeightEnsemblingModule)layer).MergedWeights(checkedPreference));
    }

    /// <inheritdoc />
    private protected override void OnRoutersLoaded()
    {
        foreach (var module in Modules)
        {
            module.Module.ClearCache();
        }
    }
}
