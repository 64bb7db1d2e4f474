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
        options.EarlyStopping?.CheckTasks(tasks);
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
        if (options.EarlyStopping is { } early)
        {
            DeviceOf.MoveHeads(early.HeldOut, device);
        }

        // θ₀ of AdaptationOptions.AnchorStrength (a resumed run reads it from the checkpoint), and the best check's
        // parameters of early stopping: copies that no dispose scope owns, released in the finally below.
        var anchors = options.AnchorStrength > 0 ? Snapshot(parameters) : null;
        var best = options.EarlyStopping is not null ? Snapshot(parameters) : null;
        var heldOutEntropy = new List<KeyValuePair<int, double>>();
        int? bestStep = null;
        double bestEntropy = double.PositiveInfinity;
        int checksWithoutImprovement = 0;

        using var optimizer = optim.Adam(parameters, options.LearningRate, options.Beta1, options.Beta2, options.Epsilon);
        var run = options.Objective.Start(model, tasks, options.Seed, logger);
        int startStep = 0;
        if (options.ResumeFrom is not null)
        {
            startStep = TrainingCheckpoint.Load(options.ResumeFrom, model, optimizer, named, TrainerState.Of(model, options, tasks, 0), anchors);
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

            if (options.EarlyStopping is not null)
            {
                Check();
            }

            model.SetTraining(true);
            while (step < options.Steps)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    if (options.CheckpointFolder is not null && savedStep != step)
                    {
                        SaveCheckpoint(model, optimizer, named, options, tasks, step, stopwatch, anchors);
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
                var result = Step(run, streams, optimizer, parameters, device, anchors, options.AnchorStrength);
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
                    checkpoint = SaveCheckpoint(model, optimizer, named, options, tasks, step, stopwatch, anchors);
                    savedStep = step;
                }

                bool stop = false;
                if (options.EarlyStopping is { } stopping && (last || step % stopping.Interval == 0))
                {
                    stop = Check();
                }

                if (progress is not null)
                {
                    var elapsed = stopwatch.Elapsed;
                    var eta = TimeSpan.FromTicks(elapsed.Ticks / (step - startStep) * (options.Steps - step));
                    progress.Report(new AdaptationProgress(
                        step, options.Steps, result.Losses, result.Loss, learningRate, result.Preference, result.EpoMove, checkpoint, elapsed, eta));
                }

                if (stop)
                {
                    Log.AdaptationStoppedEarly(logger, step, bestStep ?? 0, bestEntropy);
                    break;
                }
            }

            if (best is not null && bestStep != step)
            {
                Restore(parameters, best);
            }
        }
        finally
        {
            model.SetTraining(false);
            optimizer.zero_grad();
            Release(anchors);
            Release(best);
            foreach (var stream in streams)
            {
                stream.Dispose();
            }
        }

        Log.AdaptationCompleted(logger, "completed", step, stopwatch.Elapsed.TotalSeconds);
        return new AdaptationResult(startStep, step, lastLosses, stopwatch.Elapsed)
        {
            RestoredStep = best is not null ? bestStep : null,
            HeldOutEntropy = heldOutEntropy,
        };

        // One early-stopping check at the current step: records the held-out entropy, keeps the best parameters, and says
        // whether patience has run out.
        bool Check()
        {
            var stopping = options.EarlyStopping!;
            double entropy = HeldOutEntropy(model, stopping, device);
            heldOutEntropy.Add(new(step, entropy));
            if (entropy < bestEntropy - stopping.MinDelta || bestStep is null)
            {
                bestEntropy = Math.Min(entropy, bestEntropy);
                bestStep = step;
                checksWithoutImprovement = 0;
                Restore(best!, parameters);
                return false;
            }

            checksWithoutImprovement++;
            return checksWithoutImprovement >= stopping.Patience;
        }
    }

    /// <summary>The mean over tasks of each task's mean prediction entropy over its held-out images, in evaluation mode.</summary>
    private static double HeldOutEntropy(IAdaptableModel model, EarlyStopping stopping, Device device)
    {
        model.SetTraining(false);
        try
        {
            using var noGrad = no_grad();
            double sum = 0;
            foreach (var task in stopping.HeldOut)
            {
                double total = 0;
                foreach (var batch in task.Data.Batches(stopping.BatchSize))
                {
                    using var scope = NewDisposeScope();
                    using (batch)
                    {
                        var (images, _) = DeviceOf.Batch(batch, device);
                        long count = images.shape[0];
                        total += Tasks.EntropyLoss.Compute(task.Logits(images, model.Features)).item<float>() * count;
                    }
                }

                double mean = total / task.Data.Count;
                if (!double.IsFinite(mean))
                {
                    throw new InvalidOperationException($"Task '{task.Name}': the held-out entropy is {mean}; lower the learning rate.");
                }

                sum += mean;
            }

            return sum / stopping.HeldOut.Count;
        }
        finally
        {
            model.SetTraining(true);
        }
    }

    private static List<Tensor> Snapshot(IReadOnlyList<Parameter> parameters)
    {
        using var noGrad = no_grad();
        return parameters.Select(p => p.detach().clone().DetachFromDisposeScope()).ToList();
    }

    private static void Restore(IReadOnlyList<Tensor> destination, IReadOnlyList<Tensor> source)
    {
        using var noGrad = no_grad();
        for (int i = 0; i < destination.Count; i++)
        {
            destination[i].copy_(source[i]);
        }
    }

    private static void Release(List<Tensor>? tensors)
    {
        foreach (var tensor in tensors ?? [])
        {
            tensor.Dispose();
        }
    }

    private static ObjectiveStep Step(
        ObjectiveRun run, List<IEnumerator<TaskBatch>> streams, Adam optimizer, IReadOnlyList<Parameter> parameters, Device device, List<Tensor>? anchors, double anchorStrength)
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
            if (anchors is not null)
            {
                // (strength / 2) Σ‖θ − θ₀‖², back-propagated on its own: its gradient strength · (θ − θ₀) adds to the objective's.
                Tensor penalty = zeros(1, device: device);
                for (int i = 0; i < parameters.Count; i++)
                {
                    penalty = penalty + (parameters[i] - anchors[i]).square().sum();
                }

                (penalty * (anchorStrength / 2)).backward();
            }

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
        IAdaptableModel model, Adam optimizer, IReadOnlyList<KeyValuePair<string, Parameter>> named, AdaptationOptions options, IReadOnlyList<ClassificationTask> tasks, int step, Stopwatch stopwatch, List<Tensor>? anchors)
    {
        var started = stopwatch.Elapsed;
        string folder = options.CheckpointFolder!;
        TrainingCheckpoint.Save(folder, model, optimizer, named, TrainerState.Of(model, options, tasks, step), anchors);
        Log.CheckpointSaved(logger, folder, step, (stopwatch.Elapsed - started).TotalMilliseconds);
        return folder;
    }
}
