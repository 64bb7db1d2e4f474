using TorchSharp.Modules;
using WeightEnsembling.Pareto;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// Trains a <see cref="ParetoUpscaledModel"/> (PWEMoE): only the preference routers train, at the preference the trainer
/// sets for each step.
/// </summary>
public sealed class AdaptableParetoModel : IPreferenceConditionedModel
{
    /// <summary>Wraps <paramref name="model"/>, which the caller keeps owning.</summary>
    /// <param name="model">The Pareto model.</param>
    public AdaptableParetoModel(ParetoUpscaledModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        Model = model;
    }

    /// <summary>The wrapped model.</summary>
    public ParetoUpscaledModel Model { get; }

    /// <summary><c>PWEMoE</c>.</summary>
    public string Method => "PWEMoE";

    /// <inheritdoc/>
    public int TaskCount => Model.TaskCount;

    /// <summary>
    /// The distinct router parameters, each named by its state-dict key under the first module that has it (e.g.
    /// <c>vision_model.encoder.layers.0.mlp.gate.fc1.weight</c>).
    /// </summary>
    /// <returns>The named parameters.</returns>
    public IReadOnlyList<KeyValuePair<string, Parameter>> NamedTrainableParameters() =>
        AdaptableUpscaledModel.NamedGateParameters(Model.Modules.Select(m => (m.Path, (TorchSharp.torch.nn.Module)m.Module.Gate)));

    /// <summary>Nothing to switch: the routers read the preference, not the input.</summary>
    /// <param name="training">Ignored.</param>
    public void SetTraining(bool training)
    {
    }

    /// <inheritdoc/>
    public void SetPreference(IReadOnlyList<double> preference) => Model.SetPreference(preference);

    /// <summary><see cref="Clip.ClipVisionModel.GetImageFeatures"/> of the model at the current preference.</summary>
    /// <param name="pixelValues">Images [B, C, H, W].</param>
    /// <returns>Features [B, D].</returns>
    public Tensor Features(Tensor pixelValues) => Model.Model.GetImageFeatures(pixelValues);

    /// <summary><see cref="ParetoUpscaledModel.SavePretrained"/>.</summary>
    /// <param name="folder">The folder.</param>
    public void SavePretrained(string folder) => Model.SavePretrained(folder);

    /// <summary><see cref="ParetoUpscaledModel.LoadPretrained"/>.</summary>
    /// <param name="folder">The saved folder.</param>
    public void LoadPretrained(string folder) => Model.LoadPretrained(folder);
}
