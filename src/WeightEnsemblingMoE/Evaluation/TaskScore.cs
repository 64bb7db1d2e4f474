using System.Text.Json.Serialization;

namespace WeightEnsembling.Evaluation;

/// <summary>The result of evaluating one method on one task.</summary>
public sealed record TaskScore
{
    /// <summary>Creates a score.</summary>
    /// <param name="task">The task name, not empty.</param>
    /// <param name="accuracy">The accuracy as a fraction in [0, 1].</param>
    /// <param name="loss">The mean cross-entropy, or <see langword="null"/> when not measured.</param>
    /// <exception cref="ArgumentException">The name is empty, or a value is out of range or NaN; the message names it.</exception>
    [JsonConstructor]
    public TaskScore(string task, double accuracy, double? loss = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(task);
        if (!(accuracy >= 0 && accuracy <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(accuracy), accuracy, $"The accuracy of task '{task}' must be a fraction in [0, 1].");
        }
        if (loss is double l && (double.IsNaN(l) || l < 0))
        {
            throw new ArgumentOutOfRangeException(nameof(loss), loss, $"The loss of task '{task}' must be non-negative, not NaN.");
        }
        Task = task;
        Accuracy = accuracy;
        Loss = loss;
    }

    /// <summary>The task name.</summary>
    public string Task { get; }

    /// <summary>The accuracy as a fraction in [0, 1] (rendered as a percentage).</summary>
    public double Accuracy { get; }

    /// <summary>The mean cross-entropy over the task's examples, or <see langword="null"/> when not measured.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? Loss { get; }
}
