using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using WeightEnsembling.Diagnostics;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// Test-time adaptation by entropy minimisation (AdaMerging, WEMoE): each step draws one unlabelled batch per task,
/// computes the entropy of the task head's predictions on the model's features, sums the task losses (or
/// back-propagates them one by one) and takes an Adam step on the model's trainable parameters only.
/// </summary>
/// <remarks>
/// Deterministic: the same model, tasks, options and seed give the same parameters bit for bit on the CPU, as long as
/// libtorch's intra-op thread count is the same in both runs (reductions split across threads differently otherwise;
/// call <c>torch.set_num_threads</c> once to pin it). Each step runs inside one dispose scope on the calling thread, so
/// memory stays flat however many steps run.
/// </remarks>
public sealed class EntropyTrainer : ITestTimeAdapter
{
    private readonly ILogger logger;
    private readonly TestTimeAdaptationOptions? defaultOptions;

    /// <summary>Creates a trainer.</summary>
    /// <param name="logger">
    /// Receives the run's start and end, resumption, checkpoints (information) and each step's loss and time (debug). The
    /// default value is <see cref="NullLogger{T}.Instance"/>.
    /// </param>
    /// <param name="defaultOptions">
    /// The options used when <see cref="Adapt"/> is given none (copied and validated now), or <see langword="null"/> for
    /// <see cref="TestTimeAdaptationOptions"/>'s defaults. The default value is <see langword="null"/>.
    /// </param>
    /// <exception cref="ArgumentException">An option of <paramref name="defaultOptions"/> is invalid (the message names it).</exception>
    public EntropyTrainer(ILogger<EntropyTrainer>? logger = null, TestTimeAdaptationOptions? defaultOptions = null)
    {
        this.logger = logger ?? NullLogger<EntropyTrainer>.Instance;
        defaultOptions?.Validate();
        this.defaultOptions = defaultOptions?.Clone();
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The tasks or the options are invalid (the message names which).</exception>
    /// <exception cref="InvalidDataException">The checkpoint to resume from does not fit the model.</exception>
    /// <exception cref="InvalidOperationException">The model has no trainable parameters, or a loss became NaN or infinite.</exception>
    public TestTimeAdaptationResult Adapt(
        IAdaptableModel model,
        IReadOnlyList<ClassificationTask> tasks,
        TestTimeAdaptationOptions? options = null,
        IProgress<TestTimeAdaptationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ClassificationTask.Check(tasks, nameof(tasks));
        options ??= defaultOptions ?? new TestTimeAdaptationOptions();
        options.Validate();
        options = options.Clone();
        if (options.CheckpointPath is { } checkpointPath)
        {
            string? checkpointFolder = Path.GetDirectoryName(Path.GetFullPath(checkpointPath));
            if (checkpointFolder is not null && !Directory.Exists(checkpointFolder))
            {
                throw new ArgumentException(
                    $"{nameof(TestTimeAdaptationOptions.CheckpointPath)} '{checkpointPath}' is in a folder that does not exist ('{checkpointFolder}'): create it before training, not after.",
                    nameof(options));
            }
        }

        var parameters = model.NamedTrainableParameters();
        if (parameters.Count == 0)
        {
            throw new InvalidOperationException($"The {model.Method} model has no trainable parameters to adapt.");
        }

        using var optimizer = new AdamOptimizer(parameters, options.Beta1, options.Beta2, options.Epsilon);
        int startStep = 0;
        if (options.ResumeFrom is not null)
        {
            startStep = AdaptationCheckpoint.Load(options.ResumeFrom, model, optimizer).Step;
            Log.AdaptationResumed(logger, options.ResumeFrom, startStep);
        }

        Log.AdaptationStarting(logger, model.Method, tasks.Count, startStep, options.Steps, options.LearningRate);

        var streams = tasks.Select((t, i) => t.Data.Endless(options.BatchSize, options.Seed + i).GetEnumerator()).ToList();
        var stopwatch = Stopwatch.StartNew();
        IReadOnlyDictionary<string, double> lastLosses = new Dictionary<string, double>();
        int step = startStep;
        bool cancelled = false;
        try
        {
            // A resumed run sees the batches an uninterrupted run would have seen.
            for (int skipped = 0; skipped < startStep; skipped++)
            {
                foreach (var stream in streams)
                {
                    stream.MoveNext();
                    stream.Current.Dispose();
                }
            }

            model.SetTraining(true);
            while (step < options.Steps)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    cancelled = true;
                    break;
                }

                double learningRate = options.LearningRateAt(step);
                var stepStarted = stopwatch.Elapsed;
                lastLosses = Step(model, tasks, streams, optimizer, learningRate, options.AccumulateGradientsPerTask);
                step++;
                if (logger.IsEnabled(LogLevel.Debug))
                {
                    Log.AdaptationStep(logger, step, options.Steps, lastLosses.Values.Average(), (stopwatch.Elapsed - stepStarted).TotalMilliseconds);
                }

                bool last = step == options.Steps;
                if (options.CheckpointPath is not null && (last || (options.CheckpointEvery > 0 && step % options.CheckpointEvery == 0)))
                {
                    var saveStarted = stopwatch.Elapsed;
                    AdaptationCheckpoint.Save(options.CheckpointPath, model, step, options, optimizer);
                    Log.CheckpointSaved(logger, options.CheckpointPath, step, (stopwatch.Elapsed - saveStarted).TotalMilliseconds);
                }

                if (progress is not null)
                {
                    var elapsed = stopwatch.Elapsed;
                    int done = step - startStep;
                    var eta = TimeSpan.FromTicks(elapsed.Ticks / done * (options.Steps - step));
                    progress.Report(new TestTimeAdaptationProgress(step, options.Steps, lastLosses, learningRate, elapsed, eta));
                }
            }
        }
        finally
        {
            model.SetTraining(false);
            optimizer.ZeroGrad();
            foreach (var stream in streams)
            {
                stream.Dispose();
            }
        }

        Log.AdaptationCompleted(logger, cancelled ? "cancelled" : "completed", step, stopwatch.Elapsed.TotalSeconds);
        return new TestTimeAdaptationResult(startStep, step, cancelled, lastLosses, stopwatch.Elapsed);
    }

    private static Dictionary<string, double> Step(
        IAdaptableModel model,
        IReadOnlyList<ClassificationTask> tasks,
        List<IEnumerator<TaskBatch>> streams,
        AdamOptimizer optimizer,
        double learningRate,
        bool perTask)
    {
        using var scope = NewDisposeScope();
        optimizer.ZeroGrad();
        var losses = new Dictionary<string, double>(StringComparer.Ordinal);
        Tensor? total = null;
        for (int i = 0; i < tasks.Count; i++)
        {
            streams[i].MoveNext();
            using var batch = streams[i].Current;
            var task = tasks[i];
            var logits = task.Logits(batch.Images, model.Features);
            var loss = EntropyLoss.Compute(logits);
            double value = loss.item<float>();
            if (!double.IsFinite(value))
            {
                throw new InvalidOperationException($"Task '{task.Name}': the entropy loss is {value}; lower the learning rate.");
            }

            losses[task.Name] = value;
            if (perTask)
            {
                loss.backward();
            }
            else
            {
                total = total is null ? loss : total + loss;
            }
        }

        total?.backward();
        optimizer.Step(learningRate);
        return losses;
    }
}
