using WeightEnsembling.Tasks;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Analysis;

/// <summary>What the routers of an upscaled model do on a task's data.</summary>
public static class RoutingAnalysis
{
    /// <summary>
    /// Runs <paramref name="model"/> over every sample of <paramref name="dataset"/> (labels not needed) and averages each
    /// module's per-sample routing weights <c>LastRoutingWeights()</c> [B, T] over the samples, without gradients.
    /// </summary>
    /// <param name="model">The upscaled model.</param>
    /// <param name="dataset">The task's (test) data, not empty.</param>
    /// <param name="batchSize">The number of samples per forward pass, at least 1.</param>
    /// <param name="experts">The expert names, one per task vector; <see langword="null"/> for <c>expert 1</c>, <c>expert 2</c>, ….</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The map [module, expert] for this task.</returns>
    /// <exception cref="ArgumentException">The dataset is empty, or the expert names do not match the model's task count.</exception>
    /// <exception cref="InvalidOperationException">A module reported no routing weights, or weights of the wrong shape.</exception>
    public static RoutingMap AverageRouting(
        UpscaledModel model,
        TaskDataset dataset,
        int batchSize,
        IReadOnlyList<string>? experts = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(dataset);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        int taskCount = model.TaskCount;
        experts ??= Enumerable.Range(1, taskCount).Select(i => $"expert {i}").ToList();
        if (experts.Count != taskCount)
        {
            throw new ArgumentException($"The model has {taskCount} experts, but {experts.Count} expert names were given.", nameof(experts));
        }
        if (dataset.Count == 0)
        {
            throw new ArgumentException($"Dataset '{dataset.Name}' is empty.", nameof(dataset));
        }

        var paths = model.Modules.Select(m => m.Path).ToList();
        var sums = new double[paths.Count, taskCount];
        using var noGrad = no_grad();
        foreach (var batch in dataset.Batches(batchSize))
        {
            using var owned = batch;
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            using var output = model.Forward(batch.Images);
            var routing = model.LastRoutingWeights();
            for (int m = 0; m < paths.Count; m++)
            {
                if (!routing.TryGetValue(paths[m], out var weights))
                {
                    throw new InvalidOperationException($"Module '{paths[m]}' reported no routing weights.");
                }
                if (weights.dim() != 2 || weights.shape[0] != batch.Count || weights.shape[1] != taskCount)
                {
                    throw new InvalidOperationException($"Module '{paths[m]}' reported routing weights of shape [{string.Join(", ", weights.shape)}], expected [{batch.Count}, {taskCount}].");
                }
                var column = weights.detach().to_type(ScalarType.Float64).sum(dim: 0).cpu().data<double>().ToArray();
                for (int e = 0; e < taskCount; e++)
                {
                    sums[m, e] += column[e];
                }
            }
        }

        for (int m = 0; m < paths.Count; m++)
        {
            for (int e = 0; e < taskCount; e++)
            {
                sums[m, e] /= dataset.Count;
            }
        }

        return new RoutingMap(dataset.Name, paths, experts, sums);
    }
}
