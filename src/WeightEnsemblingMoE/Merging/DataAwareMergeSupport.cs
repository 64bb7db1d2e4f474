using System.Diagnostics;
using Microsoft.Extensions.Logging;
using TorchSharp;
using WeightEnsembling.Diagnostics;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Merging;

/// <summary>Shared plumbing of the data-aware merges: example selection, argument checks and the merged model.</summary>
internal static class DataAwareMergeSupport
{
    /// <summary>The number of examples a task contributes: min(<paramref name="exampleCount"/>, its size).</summary>
    public static long ExampleTotal(TaskDataset dataset, int exampleCount) => Math.Min(exampleCount, dataset.Count);

    /// <summary>
    /// The first <see cref="ExampleTotal"/> examples of <paramref name="dataset"/> (in shuffled order when asked), in
    /// batches of at most <paramref name="batchSize"/>; each batch is owned by the caller.
    /// </summary>
    public static IEnumerable<TaskBatch> Examples(TaskDataset dataset, int exampleCount, int batchSize, bool shuffle, int seed)
    {
        long remaining = ExampleTotal(dataset, exampleCount);
        foreach (var batch in dataset.Batches(batchSize, shuffle, seed))
        {
            if (remaining <= 0)
            {
                batch.Dispose();
                yield break;
            }

            if (batch.Count <= remaining)
            {
                remaining -= batch.Count;
                yield return batch;
                continue;
            }

            TaskBatch truncated;
            using (batch)
            {
                truncated = new TaskBatch(
                    batch.Images.narrow(0, 0, remaining).clone().DetachFromDisposeScope(),
                    batch.Labels?.narrow(0, 0, remaining).clone().DetachFromDisposeScope());
            }

            remaining = 0;
            yield return truncated;
        }
    }

    /// <summary>
    /// The loop every data-aware merge shares: for each task t, take its model, compute its statistics on its own data,
    /// fold (θ_t, statistics) into running sums, release what is no longer needed (a model loaded from a pool is disposed
    /// before the next is loaded, so only one expert is in memory), log; then build the merged model.
    /// </summary>
    /// <param name="method">The method's name, for the log.</param>
    /// <param name="count">The number of tasks.</param>
    /// <param name="modelAt">Task t's model and whether this loop owns (and disposes) it.</param>
    /// <param name="datasets">The tasks' data, for the log's names.</param>
    /// <param name="statistics">Task t's statistics on its model (Fisher diagonals, Gram matrices); disposed here.</param>
    /// <param name="fold">Folds task t's weights and statistics into the running sums.</param>
    /// <param name="result">The merged weights from the sums; disposed here.</param>
    /// <param name="build">A plain model holding the merged weights.</param>
    /// <param name="logger">The log.</param>
    public static ClipVisionModel RunPerTask(
        string method,
        int count,
        Func<int, (ClipVisionModel Model, bool Owned)> modelAt,
        IReadOnlyList<TaskDataset> datasets,
        Func<ClipVisionModel, int, Dictionary<string, Tensor>> statistics,
        Action<int, IReadOnlyDictionary<string, Tensor>, IReadOnlyDictionary<string, Tensor>> fold,
        Func<Dictionary<string, Tensor>> result,
        Func<IReadOnlyDictionary<string, Tensor>, ClipVisionModel> build,
        ILogger logger)
    {
        var stopwatch = Stopwatch.StartNew();
        for (int t = 0; t < count; t++)
        {
            var taskStarted = stopwatch.Elapsed;
            var (model, owned) = modelAt(t);
            try
            {
                var stats = statistics(model, t);
                var weights = StateDict.From(model);
                try
                {
                    fold(t, weights, stats);
                }
                finally
                {
                    DisposeAll(stats.Values);
                    DisposeAll(weights.Values);
                }
            }
            finally
            {
                if (owned)
                {
                    model.Dispose();
                }
            }

            Log.MergeTaskCompleted(logger, method, t, count, datasets[t].Name, (stopwatch.Elapsed - taskStarted).TotalMilliseconds);
        }

        var merged = result();
        try
        {
            var model = build(merged);
            Log.MergeCompleted(logger, method, count, stopwatch.Elapsed.TotalMilliseconds);
            return model;
        }
        finally
        {
            DisposeAll(merged.Values);
        }
    }

    /// <summary>Checks a non-empty dataset per model and that every model has the first one's architecture.</summary>
    public static void CheckModelsAndData(IReadOnlyList<ClipVisionModel> models, IReadOnlyList<TaskDataset> datasets)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(datasets);
        if (models.Count == 0)
        {
            throw new ArgumentException("At least one fine-tuned model is needed.", nameof(models));
        }

        if (datasets.Count != models.Count)
        {
            throw new ArgumentException($"{models.Count} models need {models.Count} datasets; got {datasets.Count}.", nameof(datasets));
        }

        for (int t = 0; t < models.Count; t++)
        {
            var model = models[t] ?? throw new ArgumentException($"Fine-tuned model {t} is null.", nameof(models));
            CheckDataset(datasets[t], $"Dataset {t}", nameof(datasets));
            if (model.Config != models[0].Config || model.HasProjection != models[0].HasProjection)
            {
                throw new ArgumentException(
                    $"Fine-tuned model {t} has another architecture than model 0 ({model.Config} with projection: {model.HasProjection}; model 0: {models[0].Config} with projection: {models[0].HasProjection}).",
                    nameof(models));
            }
        }
    }

    /// <summary>Checks that a dataset is given and not empty.</summary>
    /// <summary>Checks a pool and its per-expert datasets: one non-empty dataset per expert, in the pool's order.</summary>
    public static void CheckPoolAndData(Models.ModelPool modelPool, IReadOnlyList<TaskDataset> datasets)
    {
        ArgumentNullException.ThrowIfNull(modelPool);
        ArgumentNullException.ThrowIfNull(datasets);
        if (datasets.Count != modelPool.ExpertCount)
        {
            throw new ArgumentException($"{modelPool.ExpertCount} experts need {modelPool.ExpertCount} datasets; got {datasets.Count}.", nameof(datasets));
        }

        for (int t = 0; t < datasets.Count; t++)
        {
            CheckDataset(datasets[t], $"Dataset {t} (expert '{modelPool.ExpertNames[t]}')", nameof(datasets));
        }
    }

    public static void CheckDataset(TaskDataset? dataset, string label, string paramName)
    {
        if (dataset is null)
        {
            throw new ArgumentException($"{label} is null.", paramName);
        }

        if (dataset.Count == 0)
        {
            throw new ArgumentException($"{label} ('{dataset.Name}') is empty.", paramName);
        }
    }

    /// <summary>A new plain model of <paramref name="like"/>'s architecture holding <paramref name="weights"/>, on <paramref name="like"/>'s device.</summary>
    public static ClipVisionModel Build(ClipVisionModel like, IReadOnlyDictionary<string, Tensor> weights)
    {
        var model = ModelMerging.WithWeights(like, weights);
        var device = Models.DeviceOf.Module(like);
        if (!Models.DeviceOf.Same(device, CPU))
        {
            model.to(device);
        }

        return model;
    }

    /// <summary>Disposes every tensor of <paramref name="tensors"/>.</summary>
    public static void DisposeAll(IEnumerable<Tensor> tensors)
    {
        foreach (var tensor in tensors)
        {
            tensor.Dispose();
        }
    }

    /// <summary>The shape of a tensor as text, e.g. <c>[3, 4]</c>.</summary>
    public static string Shape(Tensor tensor) => $"[{string.Join(", ", tensor.shape)}]";

/// <summary>Checks model <paramref name="t"/>'s tensors against model 0's (recorded in <paramref name="reference"/> on first call): same keys, shapes, finite values.</summary>
public static void CheckKeys(Dictionary<string, (ScalarType Type, long[] Shape)> reference, int t, IReadOnlyDictionary<string, Tensor> weights)
    {
        if (reference.Count == 0)
        {
            foreach (var (name, tensor) in weights)
            {
                var checkedTensor = tensor ?? throw new ArgumentException($"Tensor '{name}' of model {t} is null.", "models");
                reference.Add(name, (checkedTensor.dtype, checkedTensor.shape));
            }
        }

        var missing = reference.Keys.Where(k => !weights.ContainsKey(k)).ToArray();
        var extra = weights.Keys.Where(k => !reference.ContainsKey(k)).ToArray();
        if (missing.Length > 0 || extra.Length > 0)
        {
            throw new ArgumentException(
                $"Model {t} does not match model 0: missing [{string.Join(", ", missing)}], extra [{string.Join(", ", extra)}].", "models");
        }

        foreach (var (name, tensor) in weights)
        {
            if (tensor is null || !tensor.shape.SequenceEqual(reference[name].Shape))
            {
                throw new ArgumentException(
                    $"Tensor '{name}' of model {t} has shape {(tensor is null ? "null" : Shape(tensor))}; model 0 has [{string.Join(", ", reference[name].Shape)}].",
                    "models");
            }

            if (tensor.is_floating_point() && !tensor.isfinite().all().item<bool>())
            {
                throw new ArgumentException($"Tensor '{name}' of model {t} contains NaN or Inf.", "models");
            }
        }
    }

/// <summary>Adds <paramref name="value"/> to the running sum <paramref name="name"/> (a detached copy on first use).</summary>
public static void AddTo(Dictionary<string, Tensor> sums, string name, Tensor value)
    {
        if (sums.TryGetValue(name, out var sum))
        {
            sum.add_(value);
        }
        else
        {
            sums.Add(name, value.clone().DetachFromDisposeScope());
        }
    }
}
