using WeightEnsembling.Upscaling;

namespace WeightEnsembling.Pareto;

/// <summary>One module of a <see cref="ParetoUpscaledModel"/> that became a <see cref="ParetoWeightEnsemblingModule"/>.</summary>
/// <param name="Path">Its state-dict prefix, e.g. <c>vision_model.encoder.layers.3.mlp</c>.</param>
/// <param name="LayerIndex">The encoder layer it belongs to.</param>
/// <param name="Target">Whether it is the layer's MLP or its attention block.</param>
/// <param name="Module">The Pareto weight-ensembling module.</param>
public sealed record ParetoUpscaledModule(string Path, int LayerIndex, UpscaleTargets Target, ParetoWeightEnsemblingModule Module);
