using Microsoft.Extensions.Logging;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.Training;

/// <summary>
/// What <see cref="AdaptationTrainer"/> minimises each step, given one batch per task: <see cref="EntropyObjective"/>
/// (WEMoE, E-WEMoE, low-rank WEMoE, AdaMerging: unlabelled test data) or <see cref="ParetoObjective"/> (PWEMoE: linear
/// scalarization or EPO at a preference drawn per step, labelled data). Settings specific to an objective live on it;
/// what every run shares lives on <see cref="AdaptationOptions"/>.
/// </summary>
public abstract class AdaptationObjective
{
    private protected AdaptationObjective()
    {
    }

    /// <summary>The objective's name, as logs and checkpoints record it (e.g. <c>entropy</c>, <c>pareto-epo</c>).</summary>
    public abstract string Name { get; }

    /// <summary>Throws naming the first setting out of range.</summary>
    internal abstract void Validate();

    /// <summary>Throws naming the task (or the model) that this objective cannot train on.</summary>
    internal abstract void CheckTasks(IAdaptableModel model, IReadOnlyList<ClassificationTask> tasks);

    /// <summary>Starts a run: the objective's per-run state (e.g. the seeded preference sampler).</summary>
    internal abstract ObjectiveRun Start(IAdaptableModel model, IReadOnlyList<ClassificationTask> tasks, int seed, ILogger logger);
}
