namespace WeightEnsembling.Models;

/// <summary>One row of <see cref="ParameterTable"/>: a WEMoE model over a number of experts with one task-vector storage.</summary>
/// <param name="Storage">The storage label, e.g. <c>dense</c>, <c>sparse p=0.9</c>, <c>low-rank k=64</c>.</param>
/// <param name="Experts">The number of experts T.</param>
/// <param name="Trainable">Trainable parameters (the routers).</param>
/// <param name="Total">All parameters and stored task-vector elements (values, indices, factors).</param>
/// <param name="Bytes">Bytes of everything the model stores.</param>
/// <param name="SavedByMerging">T × (one plain model's parameters) − <paramref name="Total"/>: what one upscaled model saves over keeping T separate models (negative when it costs more).</param>
public sealed record ParameterTableRow(string Storage, int Experts, long Trainable, long Total, long Bytes, long SavedByMerging);
