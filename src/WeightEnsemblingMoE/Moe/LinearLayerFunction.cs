using static TorchSharp.torch;

namespace WeightEnsembling.Moe;

/// <summary>Computes the linear layer <paramref name="layerName"/> of a <see cref="IMergeableModule"/> on <paramref name="input"/>.</summary>
/// <param name="layerName">The layer name, one of <see cref="IMergeableModule.LinearLayerNames"/>.</param>
/// <param name="input">The layer input, shape [B, N, in].</param>
/// <returns>The layer output, shape [B, N, out].</returns>
public delegate Tensor LinearLayerFunction(string layerName, Tensor input);
