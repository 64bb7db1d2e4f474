using WeightEnsembling.Tasks;
using static TorchSharp.torch;
using WeightEnsembling.Training;

namespace WeightEnsembling.Tasks;

/// <summary>
/// One task as test-time adaptation and evaluation see it: a name, its data (unlabelled is enough for adaptation,
/// labelled for evaluation) and the frozen head that maps the model's image features to the task's logits.
/// </summary>
/// <param name="Name">The task name (e.g. <c>mnist</c>); unique within a run.</param>
/// <param name="Data">The task's examples.</param>
/// <param name="Head">The task's classification head; its class count must equal the dataset's.</param>
public sealed record ClassificationTask(string Name, TaskDataset Data, TaskHead Head)
{
    /// <summary>Creates a task named after its dataset.</summary>
    /// <param name="data">The task's examples.</param>
    /// <param name="head">The task's classification head.</param>
    /// <returns>The task.</returns>
    public static ClassificationTask Of(TaskDataset data, TaskHead head)
    {
        ArgumentNullException.ThrowIfNull(data);
        return new ClassificationTask(data.Name, data, head);
    }

    /// <summary>Checks a list of tasks: not empty, no nulls, unique names, heads matching their datasets' class counts.</summary>
    /// <param name="tasks">The tasks.</param>
    /// <param name="parameterName">The caller's parameter name, for the exception.</param>
    /// <exception cref="ArgumentException">A task is null or malformed, a name repeats, or the list is empty.</exception>
    internal static void Check(IReadOnlyList<ClassificationTask> tasks, string parameterName)
    {
        ArgumentNullException.ThrowIfNull(tasks, parameterName);
        if (tasks.Count == 0)
        {
            throw new ArgumentException("At least one task is needed.", parameterName);
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < tasks.Count; i++)
        {
            var task = tasks[i] ?? throw new ArgumentException($"Task {i} is null.", parameterName);
            if (string.IsNullOrWhiteSpace(task.Name) || task.Data is null || task.Head is null)
            {
                throw new ArgumentException($"Task {i} ('{task.Name}') needs a name, data and a head.", parameterName);
            }

            if (!names.Add(task.Name))
            {
                throw new ArgumentException($"Task '{task.Name}' appears more than once.", parameterName);
            }

            if (task.Head.ClassCount != task.Data.ClassCount)
            {
                throw new ArgumentException(
                    $"Task '{task.Name}': the head has {task.Head.ClassCount} classes but the dataset '{task.Data.Name}' has {task.Data.ClassCount}.",
                    parameterName);
            }
        }
    }

    /// <summary>
    /// The head's logits on <paramref name="images"/> through <paramref name="features"/>, with errors that name this task:
    /// integer (un-normalised) images and a head whose width does not fit the features are refused.
    /// </summary>
    internal Tensor Logits(Tensor images, Func<Tensor, Tensor> features)
    {
        if (!images.is_floating_point())
        {
            throw new ArgumentException(
                $"Task '{Name}': dataset '{Data.Name}' yields {images.dtype} images; the model needs normalised floating-point pixels (ClipImageProcessor or ImageTransform make them).");
        }

        var imageFeatures = features(images);
        try
        {
            return Head.forward(imageFeatures);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"Task '{Name}': {e.Message}", e);
        }
    }
}
