using System.Text.Json;

namespace WeightEnsembling.Training;

/// <summary>
/// How a test-time adaptation run trains: Adam on the model's trainable parameters only, minimising the entropy of each
/// task's predictions on its unlabelled test data. The defaults are FusionBench's for WEMoE; AdaMerging uses
/// <see cref="ForAdaMerging"/> (learning rate 1e-3).
/// </summary>
public sealed class TestTimeAdaptationOptions
{
    /// <summary>The Adam learning rate (peak rate with <see cref="CosineSchedule"/>). The default value is 1e-4.</summary>
    public double LearningRate { get; set; } = 1e-4;

    /// <summary>The number of optimisation steps in all (a resumed run continues up to it). The default value is 1000.</summary>
    public int Steps { get; set; } = 1000;

    /// <summary>The number of unlabelled examples per task in each step. The default value is 16.</summary>
    public int BatchSize { get; set; } = 16;

    /// <summary>
    /// The seed of the data order: task i draws its batches from <c>Endless(BatchSize, Seed + i)</c>. The default value is 0.
    /// </summary>
    public int Seed { get; set; }

    /// <summary>
    /// Whether the learning rate follows a cosine from <see cref="LearningRate"/> to 0 over <see cref="Steps"/> (as PyTorch's
    /// <c>CosineAnnealingLR</c> with <c>T_max = Steps</c>, used by the original WEMoE code). The default value is <see langword="false"/>.
    /// </summary>
    public bool CosineSchedule { get; set; }

    /// <summary>
    /// Whether each task's loss is back-propagated on its own (gradients accumulate task by task, so only one task's
    /// graph is alive at a time) instead of back-propagating the sum once. The default value is <see langword="false"/>.
    /// </summary>
    public bool AccumulateGradientsPerTask { get; set; }

    /// <summary>Adam's β1. The default value is 0.9.</summary>
    public double Beta1 { get; set; } = 0.9;

    /// <summary>Adam's β2. The default value is 0.999.</summary>
    public double Beta2 { get; set; } = 0.999;

    /// <summary>Adam's ε. The default value is 1e-8.</summary>
    public double Epsilon { get; set; } = 1e-8;

    /// <summary>
    /// Save a checkpoint to <see cref="CheckpointPath"/> every this many steps (and after the last step); 0 saves only
    /// after the last step when a path is set. The default value is 0.
    /// </summary>
    public int CheckpointEvery { get; set; }

    /// <summary>
    /// The safetensors file checkpoints are written to (atomically, overwriting), or <see langword="null"/> for none. The
    /// default value is <see langword="null"/>.
    /// </summary>
    public string? CheckpointPath { get; set; }

    /// <summary>
    /// A checkpoint to resume from: the trainable parameters, the Adam moments and the step are restored and training
    /// continues up to <see cref="Steps"/>; the checkpoint must fit the model. The default value is <see langword="null"/>.
    /// </summary>
    public string? ResumeFrom { get; set; }

    /// <summary>The defaults with AdaMerging's learning rate, 1e-3.</summary>
    /// <returns>New options.</returns>
    public static TestTimeAdaptationOptions ForAdaMerging() => new() { LearningRate = 1e-3 };

    /// <summary>Checks every option, naming the first bad one.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (!double.IsFinite(LearningRate) || LearningRate <= 0)
        {
            throw new ArgumentException($"{nameof(LearningRate)} must be a positive finite number; it is {LearningRate}.", nameof(LearningRate));
        }

        if (Steps < 1)
        {
            throw new ArgumentException($"{nameof(Steps)} must be at least 1; it is {Steps}.", nameof(Steps));
        }

        if (BatchSize < 1)
        {
            throw new ArgumentException($"{nameof(BatchSize)} must be at least 1; it is {BatchSize}.", nameof(BatchSize));
        }

        if (!(Beta1 is >= 0 and < 1))
        {
            throw new ArgumentException($"{nameof(Beta1)} must lie in [0, 1); it is {Beta1}.", nameof(Beta1));
        }

        if (!(Beta2 is >= 0 and < 1))
        {
            throw new ArgumentException($"{nameof(Beta2)} must lie in [0, 1); it is {Beta2}.", nameof(Beta2));
        }

        if (!double.IsFinite(Epsilon) || Epsilon < 0)
        {
            throw new ArgumentException($"{nameof(Epsilon)} must be non-negative and finite; it is {Epsilon}.", nameof(Epsilon));
        }

        if (CheckpointEvery < 0)
        {
            throw new ArgumentException($"{nameof(CheckpointEvery)} must be non-negative; it is {CheckpointEvery}.", nameof(CheckpointEvery));
        }

        if (CheckpointEvery > 0 && string.IsNullOrWhiteSpace(CheckpointPath))
        {
            throw new ArgumentException($"{nameof(CheckpointEvery)} is {CheckpointEvery} but no {nameof(CheckpointPath)} is set.", nameof(CheckpointPath));
        }
    }

    /// <summary>The learning rate of the 0-based step <paramref name="step"/>.</summary>
    /// <param name="step">The step index, 0 ≤ step &lt; <see cref="Steps"/>.</param>
    /// <returns>The rate.</returns>
    public double LearningRateAt(int step) =>
        CosineSchedule ? LearningRate * 0.5 * (1 + Math.Cos(Math.PI * step / Steps)) : LearningRate;

    /// <summary>The options as JSON (what a checkpoint's metadata records).</summary>
    /// <returns>The JSON text.</returns>
    public string ToJson() => JsonSerializer.Serialize(this);

    /// <summary>Reads options written by <see cref="ToJson"/>.</summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The options.</returns>
    /// <exception cref="ArgumentException">The text is not such JSON.</exception>
    public static TestTimeAdaptationOptions FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            return JsonSerializer.Deserialize<TestTimeAdaptationOptions>(json)
                ?? throw new ArgumentException("The options JSON is null.", nameof(json));
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"The options JSON is malformed: {e.Message}", nameof(json), e);
        }
    }

    /// <summary>A copy of these options.</summary>
    /// <returns>The copy.</returns>
    public TestTimeAdaptationOptions Clone() => (TestTimeAdaptationOptions)MemberwiseClone();
}
