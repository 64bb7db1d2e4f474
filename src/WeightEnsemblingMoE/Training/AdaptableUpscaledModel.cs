using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Moe;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// Trains an <see cref="UpscaledModel"/> (WEMoE with 0-, 1- or 2-layer routers, E-WEMoE with a shared router and sparse
/// task vectors, or a low-rank WEMoE): only the routers train, with batch-mean routing while training and per-sample
/// routing for evaluation.
/// </summary>
public sealed class AdaptableUpscaledModel : IAdaptableModel
{
    /// <summary>Wraps <paramref name="model"/>, which the caller keeps owning.</summary>
    /// <param name="model">The upscaled model.</param>
    public AdaptableUpscaledModel(UpscaledModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        Model = model;
    }

    /// <summary>The wrapped model.</summary>
    public UpscaledModel Model { get; }

    /// <summary><c>WEMoE</c>, or <c>E-WEMoE</c> when the router is shared.</summary>
    public string Method => Model.Method;

    /// <summary>
    /// The distinct router parameters, each named by the first state-dict key it has (e.g.
    /// <c>vision_model.encoder.layers.0.mlp.gate.fc1.weight</c>); a shared router appears once.
    /// </summary>
    /// <returns>The named parameters.</returns>
    public IReadOnlyList<KeyValuePair<string, Parameter>> NamedTrainableParameters() =>
        NamedGateParameters(Model.Modules.Select(m => (m.Path, (nn.Module)m.Module.Gate)));

    /// <summary>Batch-mean routing while training, per-sample routing otherwise.</summary>
    /// <param name="training">Whether the model is about to be trained.</param>
    public void SetTraining(bool training) =>
        Model.RoutingMode = training ? RoutingMode.BatchReduce : RoutingMode.PerSample;

    /// <summary><see cref="Clip.ClipVisionModel.GetImageFeatures"/> of the upscaled model.</summary>
    /// <param name="pixelValues">Images [B, C, H, W].</param>
    /// <returns>Features [B, D].</returns>
    public Tensor Features(Tensor pixelValues) => Model.Model.GetImageFeatures(pixelValues);

    /// <summary><see cref="UpscaledModel.SavePretrained"/>.</summary>
    /// <param name="folder">The folder.</param>
    public void SavePretrained(string folder) => Model.SavePretrained(folder);

    /// <summary><see cref="UpscaledModel.LoadPretrained"/>.</summary>
    /// <param name="folder">The saved folder.</param>
    public void LoadPretrained(string folder) => Model.LoadPretrained(folder);

    /// <summary>The distinct trainable parameters of routers, named <c>{path}.gate.{name}</c> after the first module holding each.</summary>
    internal static IReadOnlyList<KeyValuePair<string, Parameter>> NamedGateParameters(IEnumerable<(string Path, nn.Module Gate)> gates)
    {
        var seen = new HashSet<IntPtr>();
        var result = new List<KeyValuePair<string, Parameter>>();
        foreach (var (path, gate) in gates)
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
}
