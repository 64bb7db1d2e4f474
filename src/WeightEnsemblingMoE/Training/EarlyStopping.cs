using WeightEnsembling.Tasks;

namespace WeightEnsembling.Training;

/// <summary>
/// A safeguard beyond the papers, off unless set on <see cref="AdaptationOptions.EarlyStopping"/>: every
/// <see cref="Interval"/> steps (and before the first) the trainer measures the prediction entropy on held-out unlabelled
/// images of every task (<see cref="HeldOut"/>, labels ignored), stops when it has not fallen by more than
/// <see cref="MinDelta"/> for <see cref="Patience"/> checks in a row, and leaves the model with the trainable parameters of
/// the best check (<see cref="AdaptationResult.RestoredStep"/>).
/// </summary>
/// <remarks>
/// The measure is the mean over tasks of each task's mean entropy over all its held-out images, with the model in
/// evaluation mode (per-sample routing). It guards against adaptation that over-fits the training batches; it cannot see
/// a collapse that lowers the entropy of held-out images too (every image confidently put in one class), which
/// <see cref="EntropyObjective.DiversityWeight"/> and <see cref="AdaptationOptions.AnchorStrength"/> address.
/// </remarks>
public sealed class EarlyStopping
{
    /// <summary>
    /// The held-out unlabelled data, one task per adapted task, in the same order and with the same names and heads (e.g.
    /// each task's validation split, or a slice of its test data kept out of <see cref="AdaptationTrainer.Adapt"/>'s
    /// tasks). Labels are not read. The default value is an empty list, which <see cref="Validate"/> refuses.
    /// </summary>
    public IReadOnlyList<ClassificationTask> HeldOut { get; set; } = [];

    /// <summary>Steps between two checks. The default value is 50.</summary>
    public int Interval { get; set; } = 50;

    /// <summary>Checks in a row without improvement after which training stops. The default value is 3.</summary>
    public int Patience { get; set; } = 3;

    /// <summary>The least fall of the held-out entropy (in nats) that counts as an improvement. The default value is 0.</summary>
    public double MinDelta { get; set; }

    /// <summary>Images per forward pass when measuring the held-out entropy. The default value is 64.</summary>
    public int BatchSize { get; set; } = 64;

    /// <summary>Checks every setting, naming the first bad one.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    /// <exception cref="ArgumentException"><see cref="HeldOut"/> is empty or holds an empty dataset.</exception>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Interval, 1, nameof(Interval));
        ArgumentOutOfRangeException.ThrowIfLessThan(Patience, 1, nameof(Patience));
        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(BatchSize));
        if (!double.IsFinite(MinDelta) || MinDelta < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MinDelta), MinDelta, $"{nameof(MinDelta)} must be non-negative and finite.");
        }

        if (HeldOut is null || HeldOut.Count == 0)
        {
            throw new ArgumentException($"{nameof(EarlyStopping)}.{nameof(HeldOut)} must hold one held-out task per adapted task.", nameof(HeldOut));
        }

        foreach (var task in HeldOut)
        {
            if (task is null || task.Data.Count == 0)
            {
                throw new ArgumentException($"{nameof(EarlyStopping)}.{nameof(HeldOut)}: task '{task?.Name}' has no held-out images.", nameof(HeldOut));
            }
        }
    }

    /// <summary>Throws unless <see cref="HeldOut"/> matches <paramref name="tasks"/> task for task.</summary>
    internal void CheckTasks(IReadOnlyList<ClassificationTask> tasks)
    {
        var names = tasks.Select(t => t.Name).ToList();
        var heldOut = HeldOut.Select(t => t.Name).ToList();
        if (!names.SequenceEqual(heldOut, StringComparer.Ordinal))
        {
            throw new ArgumentException(
                $"{nameof(EarlyStopping)}.{nameof(HeldOut)} has tasks [{string.Join(", ", heldOut)}] but the run adapts [{string.Join(", ", names)}]; give one held-out task per task, in the same order.",
                nameof(tasks));
        }

        for (int i = 0; i < tasks.Count; i++)
        {
            if (HeldOut[i].Head.ClassCount != tasks[i].Head.ClassCount)
            {
                throw new ArgumentException(
                    $"{nameof(EarlyStopping)}.{nameof(HeldOut)}: task '{tasks[i].Name}' has a head of {HeldOut[i].Head.ClassCount} classes, the adapted task {tasks[i].Head.ClassCount}.",
                    nameof(tasks));
            }
        }
    }
}
