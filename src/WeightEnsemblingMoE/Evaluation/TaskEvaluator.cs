using System.Diagnostics;
using TorchSharp;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Evaluation;

/// <summary>Measures the accuracy and mean cross-entropy of a classifier on labelled task data.</summary>
public static class TaskEvaluator
{
    /// <summary>
    /// Evaluates <paramref name="logitsOf"/> on every example of <paramref name="dataset"/>, in order, without
    /// gradients and with one dispose scope per batch. The images are passed as the dataset yields them (on the CPU for
    /// the datasets of this library); <paramref name="logitsOf"/> moves them to its model's device. The labels are
    /// compared on the device of the logits, and the counts are read once per task.
    /// </summary>
    /// <param name="logitsOf">Maps images [B, C, H, W] to logits [B, ClassCount]; must not dispose its input.</param>
    /// <param name="dataset">The labelled dataset, not empty.</param>
    /// <param name="batchSize">The number of examples per batch, at least 1.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The task's accuracy and mean cross-entropy.</returns>
    /// <exception cref="ArgumentException">The dataset is empty or unlabelled.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="logitsOf"/> returned logits of the wrong shape or with NaN.</exception>
    public static TaskScore Evaluate(Func<Tensor, Tensor> logitsOf, TaskDataset dataset, int batchSize, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(logitsOf);
        ArgumentNullException.ThrowIfNull(dataset);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        if (!dataset.HasLabels)
        {
            throw new ArgumentException($"Dataset '{dataset.Name}' has no labels: accuracy cannot be measured.", nameof(dataset));
        }
        if (dataset.Count == 0)
        {
            throw new ArgumentException($"Dataset '{dataset.Name}' is empty.", nameof(dataset));
        }

        Tensor? correct = null, lossSum = null;
        using var noGrad = no_grad();
        foreach (var batch in dataset.Batches(batchSize))
        {
            using var owned = batch;
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var logits = logitsOf(batch.Images);
            if (logits.dim() != 2 || logits.shape[0] != batch.Count || logits.shape[1] != dataset.ClassCount)
            {
                throw new InvalidOperationException($"Task '{dataset.Name}': logits must have shape [{batch.Count}, {dataset.ClassCount}], got [{string.Join(", ", logits.shape)}].");
            }
            var labels = WeightEnsembling.Models.DeviceOf.On(batch.Labels!, logits.device);
            var batchCorrect = logits.argmax(1).eq(labels).sum();
            var batchLoss = nn.functional.cross_entropy(logits.to_type(ScalarType.Float64), labels, reduction: nn.Reduction.Sum);
            Accumulate(ref correct, batchCorrect);
            Accumulate(ref lossSum, batchLoss);
        }
        try
        {
            double loss = lossSum is null ? 0 : lossSum.item<double>();
            if (double.IsNaN(loss))
            {
                throw new InvalidOperationException($"Task '{dataset.Name}': the logits contain NaN.");
            }
            return new TaskScore(dataset.Name, (correct is null ? 0 : correct.item<long>()) / (double)dataset.Count, loss / dataset.Count);
        }
        finally
        {
            correct?.Dispose();
            lossSum?.Dispose();
        }
    }

    /// <summary>Adds a batch's count to the running total, kept on the device so that nothing is read back per batch.</summary>
    private static void Accumulate(ref Tensor? total, Tensor value)
    {
        if (total is null)
        {
            total = value.clone().DetachFromDisposeScope();
        }
        else
        {
            total.add_(value);
        }
    }

    /// <summary>Evaluates one method on several tasks and times the whole evaluation.</summary>
    /// <param name="method">The method name for the report.</param>
    /// <param name="tasks">Each task's labelled dataset and the method's images → logits function for it.</param>
    /// <param name="batchSize">The number of examples per batch, at least 1.</param>
    /// <param name="progress">Receives each task's score as it is finished, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The report, with <see cref="EvaluationReport.Elapsed"/> set.</returns>
    public static EvaluationReport Evaluate(
        string method,
        IEnumerable<(TaskDataset Dataset, Func<Tensor, Tensor> LogitsOf)> tasks,
        int batchSize,
        IProgress<TaskScore>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(method);
        ArgumentNullException.ThrowIfNull(tasks);
        var list = tasks.ToList();
        var duplicate = list.GroupBy(t => t.Dataset?.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Task '{duplicate.Key}' appears {duplicate.Count()} times; give each dataset its own name.", nameof(tasks));
        }
        var stopwatch = Stopwatch.StartNew();
        var scores = new List<TaskScore>();
        foreach (var (dataset, logitsOf) in list)
        {
            var score = Evaluate(logitsOf, dataset, batchSize, cancellationToken);
            progress?.Report(score);
            scores.Add(score);
        }
        return new EvaluationReport(method, scores, stopwatch.Elapsed);
    }
}
