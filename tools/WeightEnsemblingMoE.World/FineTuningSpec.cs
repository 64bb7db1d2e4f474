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

    /// <summary>
    /// The largest random rescaling and shift of each fine-tuning image per step, as a fraction (e.g. 0.15: scale in
    /// [0.85, 1.15], shift up to ±15% of the side), drawn anew at every step with edge pixels repeated beyond the
    /// border; 0 (the default value) fine-tunes on the stored renderings as they are.
    /// </summary>
    public double Jitter { get; set; }
}
