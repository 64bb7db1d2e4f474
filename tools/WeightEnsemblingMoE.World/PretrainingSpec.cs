namespace WeightEnsembling.World;

/// <summary>The contrastive pre-training pool and its training (config section <c>pretraining</c>).</summary>
public sealed class PretrainingSpec
{
    /// <summary>The sources the pool draws from.</summary>
    public List<string> Sources { get; set; } = [];

    /// <summary>The share of each pool source's items kept for the pool (no task sees them). The default value is 0.5.</summary>
    public double PoolFraction { get; set; } = 0.5;

    /// <summary>Image–caption pairs in the pool.</summary>
    public int Pairs { get; set; } = 5000;

    /// <summary>
    /// Caption templates per source, each with at most one <c>{}</c> for the item's name (none: the caption shows the
    /// domain without naming the item, e.g. <c>a handwritten digit</c>); <c>default</c> serves the others.
    /// </summary>
    public Dictionary<string, List<string>> Captions { get; set; } = [];

    /// <summary>Optimiser steps. The default value is 1000.</summary>
    public int Steps { get; set; } = 1000;

    /// <summary>Pairs per step. The default value is 128.</summary>
    public int BatchSize { get; set; } = 128;

    /// <summary>Adam's learning rate. The default value is 5e-4.</summary>
    public double LearningRate { get; set; } = 5e-4;
}
