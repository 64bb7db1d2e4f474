using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Diagnostics;
using WeightEnsembling.Models;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// The one training loop of the library: each step draws one batch per task, lets <see cref="AdaptationOptions.Objective"/>
/// compute and back-propagate its loss (entropy for WEMoE, E-WEMoE, low-rank WEMoE and AdaMerging; linear scalarization
/// or EPO at a sampled preference for PWEMoE), and takes a TorchSharp <c>optim.Adam</c> step on the model's trainable
/// parameters only, optionally on a cosine schedule; it checkpoints and resumes bit for bit.
/// </summary>
/// <remarks>
/// <para>Deterministic: the same model, tasks, options and seed give the same parameters bit for bit on the CPU, as long as
/// libtorch's intra-op thread count is the same in both runs (call <c>torch.set_num_threads</c> once to pin it). A run
/// resumed from a checkpoint (<see cref="AdaptationOptions.ResumeFrom"/>) replays the data streams and the objective's
/// draws up to the checkpoint's step and restores Adam's state, so it ends where the uninterrupted run ends.</para>
/// <para>Cancellation follows .NET's convention: at the next step boundary the run saves a checkpoint (when
/// <see cref="AdaptationOptions.CheckpointFolder"/> is set), puts the model in evaluation mode with the parameters of the
/// last completed step and throws <see cref="OperationCanceledException"/>.</para>
/// <para>Each step runs inside one dispose scope on the calling thread, so memory stays flat however many steps run.
/// Batches, labels and the task heads are moved to the device of the model's trainable parameters (the first one's);
/// the checkpoint's tensors are written from and read into the CPU.</para>
/// </remarks>
public sealed class AdaptationTrainer : ITestTimeAdapter
{
    private readonly ILogger logger;
    private readonly AdaptationOptions? defaultOptions;

    /// <summary>Creates a trainer.</summary>
    /// <param name="logger">
    /// Receives the run's start and end, resumption, checkpoints (information) and each step's loss and time (debug). The
    /// default value is <see cref="NullLogger{T}.Instance"/>.
    /// </param>
    /// <param name="defaultOptions">
    /// The options used when <see cref="Adapt"/> is given none (copied and validated now), or <see langword="null"/> for
    /// <see cref="AdaptationOptions"/>'s defaults. The default value is <see langword="null"/>.
    /// </param>
    /// <exception cref="ArgumentException">An option of <paramref name="defaultOptions"/> is invalid (the message names it).</exception>
    public AdaptationTrainer(ILogger<AdaptationTrainer>? logger = null, AdaptationOptions? defaultOptions = null)
    {
        this.logger = logger ?? NullLogger<AdaptationTrainer>.Instance;
        defaultOptions?.Validate();
        this.defaultOptions = defaultOptions?.Clone();
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The tasks, the model or the options do not fit the objective (the message names which).</exception>
    /// <exception cref="InvalidDataException">The checkpoint to resume from does not fit the model or the run; the message names what differs.</exception>
    /// <exception cref="InvalidOperationException">The model has no trainable parameters, or a loss became NaN or infinite.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public AdaptationResult Adapt(
        IAdaptableModel model,
        IReadOnlyList<ClassificationTask> tasks,
        AdaptationOptions? options = null,
        IProgress<AdaptationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ClassificationTask.Check(tasks, nameof(tasks));
        options ??= defaultOptions ?? new AdaptationOptions();
        options.Validate();
        options = options.Clone();
        options.Objective.CheckTasks(model, tasks);
        if (options.CheckpointFolder is { } checkpointFolder && File.Exists(checkpointFolder))
        {
            throw new ArgumentException(
                $"{nameof(AdaptationOptions.CheckpointFolder)} '{checkpointFolder}' is a file; a checkpoint is a folder.", nameof(options));
        }

        var named = model.NamedTrainableParameters();
        if (named.Count == 0)
        {
            throw new InvalidOperationException($"The {model.Method} model has no trainable parameters to train.");
        }

        var parameters = named.Select(p => p.Value).ToList();
        var device = DeviceOf.Model(model);
        DeviceOf.MoveHeads(tasks, device);

        using var optimizer = optim.Adam(parameters, options.LearningRate, options.Beta1, options.Beta2, options.Epsilon);
        var run = options.Objective.Start(model, tasks, options.Seed, logger);
        int startStep = 0;
        if (options.ResumeFrom is not null)
        {
            startStep = TrainingCheckpoint.Load(options.ResumeFrom, model, optimizer, named, TrainerState.Of(model, options, tasks, 0));
            Log.AdaptationResumed(logger, options.ResumeFrom, startStep);
        }

        Log.AdaptationStarting(logger, model.Method, options.Objective.Name, tasks.Count, startStep, options.Steps, options.LearningRate);
        var streams = tasks.Select((t, i) => t.Data.Endless(options.BatchSize, options.Seed + i).GetEnumerator()).ToList();
        var stopwatch = Stopwatch.StartNew();
        IReadOnlyDictionary<string, double> lastLosses = new Dictionary<string, double>();
        int step = startStep;
        int savedStep = startStep;
        try
        {
            // A resumed run sees the batches and draws an uninterrupted run would have seen.
            for (int skipped = 0; skipped < startStep; skipped++)
            {
                foreach (var stream in streams)
                {
                    stream.MoveNext();
                    stream.Current.Dispose();
                }

                run.SkipStep();
            }

            model.SetTraining(true);
            while (step < options.Steps)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    if (options.CheckpointFolder is not null && savedStep != step)
                    {
                        SaveCheckpoint(model, optimizer, named, options, tasks, step, stopwatch);
                    }

                    Log.AdaptationCompleted(logger, "cancelled", step, stopwatch.Elapsed.TotalSeconds);
                    cancellationToken.ThrowIfCancellationRequested();
                }

                double learningRate = options.LearningRateAt(step);
                foreach (var group in optimizer.ParamGroups)
                {
                    group.LearningRate = learningRate;
                }

                var stepStarted = stopwatch.Elapsed;
                var result = Step(run, streams, optimizer, parameters, device);
                lastLosses = result.Losses;
                step++;
                if (logger.IsEnabled(LogLevel.Debug))
                {
                    Log.AdaptationStep(logger, step, options.Steps, result.Loss, (stopwatch.Elapsed - stepStarted).TotalMilliseconds);
                }

                string? checkpoint = null;
                bool last = step == options.Steps;
                if (options.CheckpointFolder is not null && (last || (options.CheckpointInterval > 0 && step % options.CheckpointInterval == 0)))
                {
                    checkpoint = SaveCheckpoint(model, optimizer, named, options, tasks, step, stopwatch);
                    savedStep = step;
                }

                if (progress is not null)
                {
                    var elapsed = stopwatch.Elapsed;
                    var eta = TimeSpan.FromTicks(elapsed.Ticks / (step - startStep) * (options.Steps - step));
                    progress.Report(new AdaptationProgress(
                        step, options.Steps, result.Losses, result.Loss, learningRate, result.Preference, result.EpoMove, checkpoint, elapsed, eta));
                }
            }
        }
        finally
        {
            model.SetTraining(false);
            optimizer.zero_grad();
            foreach (var stream in streams)
            {
                stream.Dispose();
            }
        }

        Log.AdaptationCompleted(logger, "completed", step, stopwatch.Elapsed.TotalSeconds);
        return new AdaptationResult(startStep, step, lastLosses, stopwatch.Elapsed);
    }

    private static ObjectiveStep Step(ObjectiveRun run, List<IEnumerator<TaskBatch>> streams, Adam optimizer, IReadOnlyList<Parameter> parameters, Device device)
    {
        using var scope = NewDisposeScope();
        optimizer.zero_grad();
        var drawn = new List<TaskBatch>(streams.Count);
        try
        {
            // The objective sees each batch's images and labels on the model's device (aliases when already there, owned
            // by the step's scope); the drawn batches keep their own tensors and are disposed here.
            var batches = new List<TaskBatch>(streams.Count);
            foreach (var stream in streams)
            {
                stream.MoveNext();
                drawn.Add(stream.Current);
                var (images, labels) = DeviceOf.Batch(stream.Current, device);
                batches.Add(new TaskBatch(images, labels));
            }

            var result = run.Backward(batches, parameters);
            optimizer.step();
            return result;
        }
        finally
        {
            foreach (var batch in drawn)
            {
                batch.Dispose();
            }
        }
    }

    private string SaveCheckpoint(
        IAdaptableModel model, Adam optimizer, IReadOnlyList<KeyValuePair<string, Parameter>> named, AdaptationOptions options, IReadOnlyList<ClassificationTask> tasks, int step, Stopwatch stopwatch)
    {
        var started = stopwatch.Elapsed;
        string folder = options.CheckpointFolder!;
        TrainingCheckpoint.Save(folder, model, optimizer, named, TrainerState.Of(model, options, tasks, step));
        Log.CheckpointSaved(logger, folder, step, (stopwatch.Elapsed - started).TotalMilliseconds);
        return folder;
    }
}
