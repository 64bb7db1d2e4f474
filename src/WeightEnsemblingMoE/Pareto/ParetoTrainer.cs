using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Pareto;

/// <summary>
/// Pareto set learning for PWEMoE: each step draws a preference p ~ Dirichlet(α), sets it on the model, computes each
/// task's cross-entropy on one labelled batch, scalarizes them (linear scalarization or EPO search) and takes an Adam step
/// on the routers, with a cosine learning-rate schedule.
/// </summary>
public static class ParetoTrainer
{
    /// <summary>The metadata key of router checkpoints that holds the step.</summary>
    public const string StepKey = "step";

    /// <summary>Trains the preference routers of <paramref name="model"/>.</summary>
    /// <param name="model">The Pareto model; only its routers change.</param>
    /// <param name="tasks">One labelled dataset and task head per task, in the model's task order. The heads are used as given: freeze them (<see cref="TaskHead.SetFrozen"/>) so that no gradients accumulate in them.</param>
    /// <param name="options">The options; <see langword="null"/> uses the defaults.</param>
    /// <param name="progress">Receives each step's <see cref="ParetoTrainingProgress"/>, or <see langword="null"/>.</param>
    /// <param name="logger">Receives EPO fallbacks and checkpoint messages, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between steps.</param>
    /// <returns>Every step's progress record.</returns>
    /// <exception cref="ArgumentException">The task count differs from the model's, a dataset is unlabelled or empty, or a head's class count differs from its dataset's.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
    public static IReadOnlyList<ParetoTrainingProgress> Train(
        ParetoUpscaledModel model,
        IReadOnlyList<(TaskDataset Dataset, TaskHead Head)> tasks,
        ParetoTrainingOptions? options = null,
        IProgress<ParetoTrainingProgress>? progress = null,
        ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tasks);
        options ??= new ParetoTrainingOptions();
        options.Validate();
        logger ??= NullLogger.Instance;
        CheckTasks(model, tasks);

        int taskCount = tasks.Count;
        var parameters = model.TrainableParameters();
        var sampler = new DirichletSampler(taskCount, options.DirichletAlpha, options.Seed);
        var epo = new EpoSolver(logger, options.EpoEpsilon);
        using var optimizer = optim.Adam(parameters, options.LearningRate);
        var batches = tasks.Select((task, t) => task.Dataset.Endless(options.BatchSize, options.Seed + t).GetEnumerator()).ToList();
        var history = new List<ParetoTrainingProgress>(options.Steps);
        try
        {
            for (int step = 1; step <= options.Steps; step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                double learningRate = options.LearningRateAt(step - 1);
                foreach (var group in optimizer.ParamGroups)
                {
                    group.LearningRate = learningRate;
                }

                var preference = sampler.Sample();
                model.SetPreference(preference);
                using var scope = NewDisposeScope();
                var losses = new List<Tensor>(taskCount);
                for (int t = 0; t < taskCount; t++)
                {
                    batches[t].MoveNext();
                    using var batch = batches[t].Current;
                    var logits = tasks[t].Head.call(model.Model.GetImageFeatures(batch.Images));
                    losses.Add(nn.functional.cross_entropy(logits, batch.Labels!));
                }

                var lossValues = losses.Select(l => l.to_type(ScalarType.Float64).item<double>()).ToArray();
                Tensor loss;
                EpoMove? move = null;
                if (options.Scalarization == ParetoScalarization.LinearScalarization)
                {
                    loss = losses[0] * preference[0];
                    for (int t = 1; t < taskCount; t++)
                    {
                        loss = loss + losses[t] * preference[t];
                    }
                }
                else
                {
                    var solution = epo.Solve(lossValues, GradientGram(losses, parameters), preference);
                    move = solution.Move;
                    loss = losses[0] * (taskCount * solution.Alpha[0]);
                    for (int t = 1; t < taskCount; t++)
                    {
                        loss = loss + losses[t] * (taskCount * solution.Alpha[t]);
                    }
                }

                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                string? checkpoint = null;
                if (options.CheckpointFolder is not null && (step % options.CheckpointInterval == 0 || step == options.Steps))
                {
                    checkpoint = SaveCheckpoint(model, options, step, tasks);
                    logger.LogInformation("PWEMoE: router checkpoint of step {Step} written to {Path}.", step, checkpoint);
                }

                var record = new ParetoTrainingProgress(
                    step, options.Steps, preference, lossValues, loss.to_type(ScalarType.Float64).item<double>(), learningRate, move, checkpoint);
                history.Add(record);
                progress?.Report(record);
            }
        }
        finally
        {
            foreach (var enumerator in batches)
            {
                enumerator.Dispose();
            }
        }

        return history;
    }

    /// <summary>
    /// The Gram matrix G·Gᵀ of the task losses' gradients with respect to <paramref name="parameters"/> (each row of G one
    /// task's flattened gradient), computed with the graph retained for the training step's backward pass.
    /// </summary>
    /// <param name="losses">The scalar task losses.</param>
    /// <param name="parameters">The parameters the gradients are taken with respect to.</param>
    /// <returns>The [T, T] Gram matrix in double precision.</returns>
    internal static double[,] GradientGram(IReadOnlyList<Tensor> losses, IReadOnlyList<Tensor> parameters)
    {
        using var scope = NewDisposeScope();
        var rows = new List<Tensor>(losses.Count);
        foreach (var taskLoss in losses)
        {
            var grads = autograd.grad([taskLoss], parameters.ToList(), retain_graph: true, allow_unused: true);
            var flat = grads.Select((g, i) => (g is null || g.IsInvalid ? zeros_like(parameters[i]) : g).detach().flatten().to_type(ScalarType.Float64)).ToList();
            rows.Add(cat(flat, 0));
        }

        var g = stack(rows);
        var gram = g.matmul(g.t()).cpu();
        int m = losses.Count;
        var values = gram.data<double>().ToArray();
        var result = new double[m, m];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < m; j++)
            {
                result[i, j] = values[(i * m) + j];
            }
        }

        return result;
    }

    private static void CheckTasks(ParetoUpscaledModel model, IReadOnlyList<(TaskDataset Dataset, TaskHead Head)> tasks)
    {
        if (tasks.Count != model.TaskCount)
        {
            throw new ArgumentException($"The model merges {model.TaskCount} tasks; {tasks.Count} were given.", nameof(tasks));
        }

        foreach (var (dataset, head) in tasks)
        {
            ArgumentNullException.ThrowIfNull(dataset, nameof(tasks));
            ArgumentNullException.ThrowIfNull(head, nameof(tasks));
            if (!dataset.HasLabels || dataset.Count == 0)
            {
                throw new ArgumentException($"Dataset '{dataset.Name}' must be labelled and not empty for Pareto training.", nameof(tasks));
            }

            if (head.ClassCount != dataset.ClassCount)
            {
                throw new ArgumentException($"The head of task '{dataset.Name}' has {head.ClassCount} classes; the dataset has {dataset.ClassCount}.", nameof(tasks));
            }
        }
    }

    private static string SaveCheckpoint(ParetoUpscaledModel model, ParetoTrainingOptions options, int step, IReadOnlyList<(TaskDataset Dataset, TaskHead Head)> tasks)
    {
        Directory.CreateDirectory(options.CheckpointFolder!);
        string path = Path.Combine(options.CheckpointFolder!, $"pwemoe_routers_step{step.ToString("D6", CultureInfo.InvariantCulture)}.safetensors");
        var routers = model.RouterStateDict();
        try
        {
            var metadata = new Dictionary<string, string>
            {
                ["format"] = "pwemoe-routers",
                [StepKey] = step.ToString(CultureInfo.InvariantCulture),
                ["scalarization"] = options.Scalarization.ToString(),
                ["seed"] = options.Seed.ToString(CultureInfo.InvariantCulture),
                ["dirichlet_alpha"] = options.DirichletAlpha.ToString("R", CultureInfo.InvariantCulture),
                ["tasks"] = string.Join(",", tasks.Select(t => t.Dataset.Name)),
            };
            SafeTensorsWriter.Save(path, routers, metadata);
            return path;
        }
        finally
        {
            foreach (var tensor in routers.Values)
            {
                tensor.Dispose();
            }
        }
    }
}
