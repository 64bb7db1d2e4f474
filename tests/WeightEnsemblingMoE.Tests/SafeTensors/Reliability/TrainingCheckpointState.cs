using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors.Reliability;

/// <summary>
/// One training checkpoint's live state: an upscaled model, a TorchSharp Adam over its trainable parameters and the
/// trainer state, with a snapshot of everything a checkpoint folder holds (router values, Adam moments and steps, the
/// trainer's step) keyed as the files key them.
/// </summary>
internal sealed class TrainingCheckpointState : IDisposable
{
    /// <summary>The key of the trainer's step (from <c>trainer_state.json</c>) in a <see cref="Snapshot"/>.</summary>
    public const string TrainerStepKey = "trainer_state.step";

    public static readonly string[] TaskNames = ["task0", "task1", "task2"];

    private TrainingCheckpointState(UpscaledModel model, int step)
    {
        Model = model;
        Parameters = model.NamedTrainableParameters();
        Optimizer = optim.Adam(Parameters.Select(p => p.Value).ToList(), lr: 0.01);
        State = StateAt(step);
    }

    public UpscaledModel Model { get; }

    public IReadOnlyList<KeyValuePair<string, Parameter>> Parameters { get; }

    public Adam Optimizer { get; }

    public TrainerState State { get; }

    /// <summary>The trainer state of this test's run at <paramref name="step"/> (WEMoE, entropy, 100 steps, seed 0).</summary>
    public static TrainerState StateAt(int step) => new("WEMoE", "entropy", step, 100, 0, 8, TaskNames, 0.01);

    /// <summary>
    /// State <paramref name="which"/> (0 or 1): <see cref="TrainedWeightsStates.Adaptable"/>'s routers after
    /// <paramref name="which"/> + 1 Adam steps on a dummy loss, at trainer step <see cref="TrainedWeightsStates.Step"/>;
    /// the two differ in router values, moments, Adam's step and the trainer's step.
    /// </summary>
    public static TrainingCheckpointState Trained(TrainedWeightsStates states, int which)
    {
        var state = new TrainingCheckpointState(states.Adaptable(which), TrainedWeightsStates.Step(which));
        for (var s = 0; s <= which; s++)
        {
            using var scope = NewDisposeScope();
            state.Optimizer.zero_grad();
            Tensor? loss = null;
            for (var i = 0; i < state.Parameters.Count; i++)
            {
                var term = state.Parameters[i].Value.square().sum() * (i + 1);
                loss = loss is null ? term : loss + term;
            }
            loss!.backward();
            state.Optimizer.step();
        }
        return state;
    }

    /// <summary>A model and optimizer to load into: state 0's routers, a fresh Adam (zero moments, step 0).</summary>
    public static TrainingCheckpointState Fresh(TrainedWeightsStates states) => new(states.Adaptable(0), 0);

    public void Save(string folder) => TrainingCheckpoint.Save(folder, Model, Optimizer, Parameters, State, null);

    /// <summary>Loads <paramref name="folder"/> into this model and optimizer; returns the checkpoint's step.</summary>
    public int Load(string folder) => TrainingCheckpoint.Load(folder, Model, Optimizer, Parameters, StateAt(0), null);

    /// <summary>Adam's per-parameter states, in parameter order.</summary>
    public Adam.State[] AdamStates() => Optimizer.state_dict().State.Cast<Adam.State>().ToArray();

    /// <summary>
    /// Router values (by router state-dict key), <c>exp_avg.NAME</c>, <c>exp_avg_sq.NAME</c>, <c>step.NAME</c> (int64
    /// scalars) and <see cref="TrainerStepKey"/> = <paramref name="trainerStep"/>, as clones the caller owns.
    /// </summary>
    public Dictionary<string, Tensor> Snapshot(int trainerStep)
    {
        var result = Model.RouterStateDict();
        var adam = AdamStates();
        for (var i = 0; i < Parameters.Count; i++)
        {
            var name = Parameters[i].Key;
            result["exp_avg." + name] = adam[i].exp_avg.detach().clone();
            result["exp_avg_sq." + name] = adam[i].exp_avg_sq.detach().clone();
            result["step." + name] = tensor(adam[i].step, ScalarType.Int64);
        }
        result[TrainerStepKey] = tensor((long)trainerStep, ScalarType.Int64);
        return result;
    }

    /// <summary>Sets every router value and moment to <paramref name="value"/> and Adam's steps to 0.</summary>
    public void Reset(float value)
    {
        using var noGrad = no_grad();
        foreach (var (_, parameter) in Parameters)
        {
            parameter.fill_(value);
        }
        foreach (var adam in AdamStates())
        {
            adam.exp_avg.fill_(value);
            adam.exp_avg_sq.fill_(value);
            adam.step = 0;
        }
    }

    public void Dispose()
    {
        Optimizer.Dispose();
        Model.Dispose();
    }
}
