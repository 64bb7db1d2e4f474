using Microsoft.Extensions.Logging;
using TorchSharp.Modules;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// Test-time adaptation by entropy minimisation (AdaMerging, WEMoE): the loss is the sum over tasks of the mean Shannon
/// entropy of each task head's predictions on an unlabelled batch.
/// </summary>
public sealed class EntropyObjective : AdaptationObjective
{
    /// <summary>
    /// Whether each task's loss is back-propagated on its own (gradients accumulate task by task, so only one task's graph
    /// is alive at a time) instead of back-propagating the sum once. The default value is <see langword="false"/>.
    /// </summary>
    public bool AccumulateGradientsPerTask { get; init; }

    /// <summary><c>entropy</c>.</summary>
    public override string Name => "entropy";

    internal override void Validate()
    {
    }

    internal override void CheckTasks(IAdaptableModel model, IReadOnlyList<ClassificationTask> tasks)
    {
        foreach (var task in tasks)
        {
            if (task.Data.Count == 0)
            {
                throw new ArgumentException($"Task '{task.Name}': dataset '{task.Data.Name}' is empty.", nameof(tasks));
            }
        }
    }

    internal override ObjectiveRun Start(IAdaptableModel model, IReadOnlyList<ClassificationTask> tasks, int seed, ILogger logger) =>
        new Run(this, model, tasks);

    private sealed class Run(EntropyObjective objective, IAdaptableModel model, IReadOnlyList<ClassificationTask> tasks) : ObjectiveRun
    {
        public override void SkipStep()
        {
        }

        public override ObjectiveStep Backward(IReadOnlyList<TaskBatch> batches, IReadOnlyList<Parameter> parameters)
        {
            var losses = new Dictionary<string, double>(StringComparer.Ordinal);
            Tensor? total = null;
            for (int i = 0; i < tasks.Count; i++)
            {
                var task = tasks[i];
                var loss = EntropyLoss.Compute(task.Logits(batches[i].Images, model.Features));
                double value = loss.item<float>();
                if (!double.IsFinite(value))
                {
                    throw new InvalidOperationException($"Task '{task.Name}': the entropy loss is {value}; lower the learning rate.");
                }

                losses[task.Name] = value;
                if (objective.AccumulateGradientsPerTask)
                {
                    loss.backward();
                }
                else
                {
                    total = total is null ? loss : total + loss;
                }
            }

            total?.backward();
            return new ObjectiveStep(losses, losses.Values.Sum(), null, null);
        }
    }
}
