namespace WeightEnsembling.Upscaling;

/// <summary>One module of an upscaled model that became a weight-ensembling mixture of experts.</summary>
/// <param name="Path">Its state-dict prefix, e.g. <c>vision_model.encoder.layers.3.mlp</c>.</param>
/// <param name="LayerIndex">The encoder layer it belongs to.</param>
/// <param name="Target">Whether it is the layer's MLP or its attention block.</param>
/// <param name="Module">The mixture-of-experts module.</param>
public sealed record UpscaledModule(string Path, int LayerIndex, UpscaleTargets Target, Moe.WeightEnsemblingMoE Module);
