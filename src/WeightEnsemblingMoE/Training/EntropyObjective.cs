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

    /// <summary>
    /// A safeguard beyond the papers against the collapse of entropy minimisation (every image put confidently in one
    /// class): each task's loss becomes its mean prediction entropy minus DiversityWeight × the entropy of the batch's mean
    /// prediction, the information-maximisation loss of SHOT (Liang et al., ICML 2020) at weight 1. 0 gives the papers'
    /// objective. The default value is 0.
    /// </summary>
    public double DiversityWeight { get; init; }

    /// <summary><c>entropy</c>, or <c>entropy-diversity</c> when <see cref="DiversityWeight"/> is set.</summary>
    public override string Name => DiversityWeight > 0 ? "entropy-diversity" : "entropy";

    internal override void Validate()
    {
        if (!double.IsFinite(DiversityWeight) || DiversityWeight < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(DiversityWeight), DiversityWeight, $"{nameof(DiversityWeight)} must be non-negative and finite.");
        }
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

    /// <summary>
    /// One task's loss on a batch of logits [B, C]: the mean prediction entropy, minus <paramref name="diversityWeight"/>
    /// × the entropy of the batch's mean prediction when it is positive (the log's ε is FusionBench's 1e-8 in both).
    /// </summary>
    internal static Tensor Loss(Tensor logits, double diversityWeight)
    {
        var loss = EntropyLoss.Compute(logits);
        if (diversityWeight > 0)
        {
            // −H(p̄): the batch's mean prediction is pushed to spread over the classes.
            var mean = logits.softmax(-1).mean([0]);
            var diversity = -(mean * (mean + EntropyLoss.DefaultEpsilon).log()).sum();
            loss = loss - (diversityWeight * diversity);
        }

        return loss;
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
                var loss = Loss(task.Logits(batches[i].Images, model.Features), objective.DiversityWeight);

                double value = loss.item<float>();
                if (!double.IsFinite(value))
                {
                    throw new InvalidOperationException($"Task '{task.Name}': the {objective.Name} loss is {value}; lower the learning rate.");
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
