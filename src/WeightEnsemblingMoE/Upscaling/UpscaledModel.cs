using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Moe;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Upscaling;

/// <summary>
/// A CLIP vision model whose selected modules are weight-ensembling mixtures of experts (WEMoE, E-WEMoE, low-rank or
/// sparse task vectors), as built by <see cref="ModelUpscaler"/>: the routers read the modules' input tokens. What every
/// upscaled model shares (state dict, saving, merge-and-unload) is in <see cref="UpscaledModelBase"/>.
/// </summary>
public sealed class UpscaledModel : UpscaledModelBase
{
    internal UpscaledModel(ClipVisionModel model, ModelPool pool, IReadOnlyList<UpscaledModule> modules, Router? sharedRouter, ModelUpscalerOptions options)
        : base(model, pool, modules.Select(m => (m.Path, m.LayerIndex, (WeightEnsemblingLayer)m.Module)).ToList(), sharedRouter, options)
    {
        Modules = modules;
    }

    /// <summary>The mixture-of-experts modules, in layer order.</summary>
    public IReadOnlyList<UpscaledModule> Modules { get; }

    /// <summary>The method: <c>WEMoE</c> (a router per module) or <c>E-WEMoE</c> (one shared router).</summary>
    public override string Method => Options.SharedRouter ? "E-WEMoE" : "WEMoE";

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

    /// <summary>
    /// The routing used while training: <see cref="RoutingMode.BatchReduce"/> (FusionBench's recipe: one batch-mean
    /// routing per batch) or <see cref="RoutingMode.PerSample"/> (the original WEMoE repository's recipe). Evaluation
    /// always routes per sample. The default value is <see cref="RoutingMode.BatchReduce"/>.
    /// </summary>
    public RoutingMode TrainingRoutingMode { get; set; } = RoutingMode.BatchReduce;

    /// <summary><see cref="TrainingRoutingMode"/> while training, per-sample routing otherwise.</summary>
    /// <param name="training">Whether the model is about to be trained.</param>
    public override void SetTraining(bool training) =>
        RoutingMode = training ? TrainingRoutingMode : RoutingMode.PerSample;

    /// <summary>
    /// Rebuilds a model saved by <see cref="UpscaledModelBase.SavePretrained"/> over <paramref name="modelPool"/>: the pool
    /// is checked against the saved configuration first (experts' names and order, fingerprints of θ_0 and every task
    /// vector), then the model is upcycled with the saved options and the routers are loaded.
    /// </summary>
    /// <param name="folder">The saved folder.</param>
    /// <param name="modelPool">The pool of the pre-trained model and experts the routers were trained on.</param>
    /// <returns>The model; the caller owns it.</returns>
    /// <exception cref="InvalidDataException">The folder is not a saved WEMoE / E-WEMoE model, or the pool differs; the message names every difference.</exception>
    public static UpscaledModel FromPretrained(string folder, ModelPool modelPool) =>
        UpscaledModelParts.FromPretrained(folder, modelPool, ["WEMoE", "E-WEMoE"], u => u.Build());

    /// <summary>The routing weights [B, T] of the last forward pass, by module path (absent before the first forward).</summary>
    /// <returns>The routing weights, owned by the modules: copy them to keep them past the next forward pass.</returns>
    public IReadOnlyDictionary<string, Tensor> LastRoutingWeights() =>
        Modules.Where(m => m.Module.LastRoutingWeights is not null)
            .ToDictionary(m => m.Path, m => m.Module.LastRoutingWeights!, StringComparer.Ordinal);

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
}
