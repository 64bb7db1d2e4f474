using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Merging;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors.Reliability;

/// <summary>
/// Two known states of each trained-weights writer (router folder of an upscaled model, AdaMerging folder, training
/// checkpoint folder, see <see cref="TrainingCheckpointState"/>), built deterministically over one tiny pool, so that a child process saving them alternately and the
/// test reading what it left agree bit for bit on what either state holds.
/// </summary>
internal sealed class TrainedWeightsStates : IDisposable
{
    private readonly ClipVisionModel _pretrained;
    private readonly ClipVisionModel[] _experts;

    public TrainedWeightsStates()
    {
        _pretrained = Upscaling.TinyClip.Pretrained();
        _experts = [Upscaling.TinyClip.Expert(_pretrained, 11), Upscaling.TinyClip.Expert(_pretrained, 12), Upscaling.TinyClip.Expert(_pretrained, 13)];
    }

    /// <summary>A fresh pool over the same θ_0 and experts (the pool does not own them).</summary>
    public ModelPool Pool() => ModelPool.FromModels(_pretrained, _experts, ["task0", "task1", "task2"]);

    /// <summary>State 0: WEMoE with two-layer routers; state 1: one-layer routers (other tensors, other configuration).</summary>
    public UpscaledModel Upscaled(int which)
    {
        torch.manual_seed(100 + which);
        var model = ModelUpscaler.For(Pool()).WithOptions(new ModelUpscalerOptions { RouterDepth = which == 0 ? 2 : 1 }).Build();
        Perturb(model.TrainableParameters(), 3 + which);
        return model;
    }

    /// <summary>State 0: task-wise coefficients; state 1: layer-wise.</summary>
    public AdaMergingModel AdaMerging(int which)
    {
        var model = AdaMergingModel.Create(Pool(), new AdaMergingOptions { Granularity = which == 0 ? AdaMergingGranularity.TaskWise : AdaMergingGranularity.LayerWise });
        Perturb([model.MergeWeight], 5 + which);
        return model;
    }

    /// <summary>The training checkpoint's two model states: one architecture, other router values.</summary>
    public UpscaledModel Adaptable(int which)
    {
        torch.manual_seed(200);
        var model = ModelUpscaler.For(Pool()).WithOptions(new ModelUpscalerOptions { RouterDepth = 2 }).Build();
        Perturb(model.TrainableParameters(), 7 + which);
        return model;
    }

    /// <summary>The trainer step recorded with training checkpoint state <paramref name="which"/>.</summary>
    public static int Step(int which) => 10 + which;

    private static void Perturb(IEnumerable<Parameter> parameters, int seed)
    {
        using var generator = new Generator((ulong)seed);
        using var noGrad = no_grad();
        foreach (var parameter in parameters)
        {
            using var noise = randn(parameter.shape, generator: generator) * 0.1;
            parameter.add_(noise);
        }
    }

    /// <summary>Saves the two states of <paramref name="mode"/> alternately into <paramref name="target"/> until killed.</summary>
    public static int Run(string mode, string target)
    {
        using var states = new TrainedWeightsStates();
        Action<int> save;
        switch (mode)
        {
            case "routers":
            {
                var models = new[] { states.Upscaled(0), states.Upscaled(1) };
                save = i => models[i].SavePretrained(target);
                break;
            }
            case "adamerging":
            {
                var models = new[] { states.AdaMerging(0), states.AdaMerging(1) };
                save = i => models[i].SavePretrained(target);
                break;
            }
            case "checkpoint":
            {
                var checkpoints = new[] { TrainingCheckpointState.Trained(states, 0), TrainingCheckpointState.Trained(states, 1) };
                save = i => checkpoints[i].Save(target);
                break;
            }
            default:
                Console.Error.WriteLine($"unknown mode '{mode}'");
                return 2;
        }

        for (var i = 0; ; i++)
        {
            save(i % 2);
            Console.Out.WriteLine($"saved {i}");
            Console.Out.Flush();
        }
    }

    public void Dispose()
    {
        _pretrained.Dispose();
        foreach (var expert in _experts)
        {
            expert.Dispose();
        }
    }
}
