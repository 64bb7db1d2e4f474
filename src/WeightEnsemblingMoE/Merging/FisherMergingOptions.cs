namespace WeightEnsembling.Merging;

/// <summary>Options of <see cref="FisherMerging"/>.</summary>
public sealed class FisherMergingOptions
{
    /// <summary>
    /// The number of examples of each task used to estimate its Fisher (all of them when the task has fewer). The default
    /// value is 256.
    /// </summary>
    public int ExampleCount { get; set; } = 256;

    /// <summary>The number of examples loaded (and, with <see cref="PerExampleGradients"/> off, differentiated) at once. The default value is 32.</summary>
    public int BatchSize { get; set; } = 32;

    /// <summary>Which labels the log-likelihood uses. The default value is <see cref="FisherLabels.Sampled"/>.</summary>
    public FisherLabels Labels { get; set; } = FisherLabels.Sampled;

    /// <summary>
    /// Whether each example gets its own backward pass, so that the estimate is the mean of per-example squared
    /// gradients (exact for the chosen labels). When off, one backward pass per batch squares the gradient of the
    /// batch's summed log-likelihood: with <see cref="FisherLabels.Sampled"/> labels the cross terms
    /// g_n·g_m (n ≠ m) have zero mean (the score has zero mean under the model's distribution and the labels are drawn
    /// independently), so this is an unbiased estimate of the same quantity with a higher variance; with true labels it
    /// is not, and <see cref="Validate"/> rejects that combination. The default value is <see langword="true"/>.
    /// </summary>
    public bool PerExampleGradients { get; set; } = true;

    /// <summary>
    /// Whether each task's Fisher is divided by its L2 norm over all parameters before merging (as FusionBench's
    /// <c>normalize_fisher_weight</c>), so that no task dominates by the scale of its gradients. The default value is
    /// <see langword="true"/>.
    /// </summary>
    public bool NormalizeFisher { get; set; } = true;

    /// <summary>
    /// The floor ε added to every Fisher entry (and to each norm) so that no denominator is zero: an entry where every
    /// Fisher is zero is the plain average. Must be positive. The default value is 1e-6.
    /// </summary>
    public double MinimalFisher { get; set; } = 1e-6;

    /// <summary>Whether each task's examples are visited in a random order (drawn from <see cref="Seed"/>). The default value is <see langword="true"/>.</summary>
    public bool Shuffle { get; set; } = true;

    /// <summary>The seed of the shuffle and of the sampled labels. The default value is 42.</summary>
    public int Seed { get; set; } = 42;

    /// <summary>Checks the options and throws an exception naming the first bad option.</summary>
    /// <exception cref="ArgumentException">An option is out of range or the combination is not allowed.</exception>
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

        if (!Enum.IsDefined(Labels))
        {
            throw new ArgumentException($"{nameof(Labels)} = {Labels} is not defined.", nameof(Labels));
        }

        if (!(MinimalFisher > 0) || double.IsInfinity(MinimalFisher))
        {
            throw new ArgumentException($"{nameof(MinimalFisher)} must be positive and finite; got {MinimalFisher}.", nameof(MinimalFisher));
        }

        if (!PerExampleGradients && Labels == FisherLabels.True)
        {
            throw new ArgumentException(
                $"{nameof(PerExampleGradients)} = false needs {nameof(Labels)} = {nameof(FisherLabels.Sampled)}: with true labels the squared batch gradient does not estimate the Fisher.",
                nameof(PerExampleGradients));
        }
    }
}
