namespace WeightEnsembling.World;

/// <summary>The experts' fine-tuning of the image tower through the frozen zero-shot heads (config section <c>fineTuning</c>).</summary>
public sealed class FineTuningSpec
{
    /// <summary>Optimiser steps per task. The default value is 300.</summary>
    public int Steps { get; set; } = 300;

    /// <summary>Images per step. The default value is 64.</summary>
    public int BatchSize { get; set; } = 64;

    /// <summary>AdamW's learning rate. The default value is 1e-4.</summary>
    public double LearningRate { get; set; } = 1e-4;

    /// <summary>AdamW's weight decay. The default value is 0.1.</summary>
    public double WeightDecay { get; set; } = 0.1;
}
