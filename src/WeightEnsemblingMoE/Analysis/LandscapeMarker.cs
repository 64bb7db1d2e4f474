namespace WeightEnsembling.Analysis;

/// <summary>A model marked on a loss landscape at (λ_1, λ_2).</summary>
/// <param name="Label">The label shown next to the point (e.g. <c>TIES</c>).</param>
/// <param name="Lambda1">The coefficient of τ_1.</param>
/// <param name="Lambda2">The coefficient of τ_2.</param>
/// <param name="Residual">
/// For a point found by <see cref="LossLandscapes.Project"/>: ‖d − λ_1 τ_1 − λ_2 τ_2‖ / ‖d‖ with d = θ − θ_0, the share of the
/// model's offset from θ_0 that lies off the (τ_1, τ_2) plane (0 for a model on the plane). <see langword="null"/> for a
/// point given by its coordinates.
/// </param>
public sealed record LandscapeMarker(string Label, double Lambda1, double Lambda2, double? Residual = null);
