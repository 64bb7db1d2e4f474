namespace WeightEnsembling.Merging;

/// <summary>Options of <see cref="RegMean"/>.</summary>
public sealed class RegMeanOptions
{
    /// <summary>
    /// The number of examples of each task whose linear-layer inputs form its Gram matrices (all of them when the task
    /// has fewer). The default value is 256.
    /// </summary>
    public int ExampleCount { get; set; } = 256;

    /// <summary>The number of examples run through the model at once. The default value is 32.</summary>
    public int BatchSize { get; set; } = 32;

    /// <summary>
    /// The factor α of the off-diagonal Gram entries, G̃ = α G + (1 − α) diag(G), in [0, 1] (FusionBench's
    /// <c>reduce_non_diagonal_ratio</c>; 1 is plain RegMean, 0 a diagonal weighting). The default value is 0.95, the
    /// value of FusionBench's CLIP configuration.
    /// </summary>
    public double Alpha { get; set; } = 0.95;

    /// <summary>
    /// The relative ridge ρ of the fallback for a summed Gram matrix A that is not numerically positive definite (its
    /// Cholesky factorisation fails, or the squared ratio of the smallest to the largest diagonal entry of the factor is
    /// below 1e-12): the weight solves (A + εI) Wᵀ = Σ G̃_t W_tᵀ + ε W̄ᵀ with ε = ρ·mean(diag A) and W̄ the simple
    /// average, so input directions no task ever excites take the average weights; a zero A gives W̄ exactly. Must be
    /// positive. The default value is 1e-6.
    /// </summary>
    public double RidgeRatio { get; set; } = 1e-6;

    /// <summary>
    /// Whether a singular or ill-conditioned summed Gram matrix throws (naming the layer) instead of using the ridge
    /// fallback of <see cref="RidgeRatio"/>. The default value is <see langword="false"/>.
    /// </summary>
    public bool ThrowOnIllConditioned { get; set; }

    /// <summary>Whether each task's examples are visited in a random order (drawn from <see cref="Seed"/>). The default value is <see langword="true"/>.</summary>
    public bool Shuffle { get; set; } = true;

    /// <summary>The seed of the shuffle. The default value is 42.</summary>
    public int Seed { get; set; } = 42;

    /// <summary>Checks the options and throws an exception naming the first bad option.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (ExampleCount < 1)
        {
            throw new ArgumentException($"{nameof(ExampleCount)} must be at least 1; got {ExampleCount}.", nameof(ExampleCount));
        }

        if (BatchSize < 1)
        {
            throw new ArgumentException($"{nameof(BatchSize)} must be at least 1; got {BatchSize}.", nameof(BatchSize));
        }

        if (!(Alpha >= 0 && Alpha <= 1))
        {
            throw new ArgumentException($"{nameof(Alpha)} must lie in [0, 1]; got {Alpha}.", nameof(Alpha));
        }

        if (!(RidgeRatio > 0) || double.IsInfinity(RidgeRatio))
        {
            throw new ArgumentException($"{nameof(RidgeRatio)} must be positive and finite; got {RidgeRatio}.", nameof(RidgeRatio));
        }
    }
}
