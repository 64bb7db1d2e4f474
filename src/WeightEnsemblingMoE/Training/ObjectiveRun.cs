using TorchSharp.Modules;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.Training;

/// <summary>One run of an <see cref="AdaptationObjective"/>: its state across steps.</summary>
internal abstract class ObjectiveRun
{
    /// <summary>Advances the run's own random draws by one step without computing anything (to resume at a step).</summary>
    public abstract void SkipStep();

    /// <summary>
    /// Computes the step's loss on one batch per task (on the parameters' device) and back-propagates it into the
    /// parameters' gradients (which the trainer has zeroed).
    /// </summary>
    public abstract ObjectiveStep Backward(IReadOnlyList<TaskBatch> batches, IReadOnlyList<Parameter> parameters);
}
