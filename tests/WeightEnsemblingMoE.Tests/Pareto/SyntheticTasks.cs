using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Pareto;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Pareto;

/// <summary>
/// Two conflicting synthetic tasks on tiny CLIP models: expert t differs from θ_0 by a large random task vector, and task
/// t's labels are what a fixed linear head reads from expert t's image features, so each expert solves its own task and
/// the two task vectors pull the merged model in different directions.
/// </summary>
internal sealed class SyntheticTasks : IDisposable
{
    public const int Classes = 4;

    public SyntheticTasks(int examples = 96)
    {
        Pretrained = TinyClip.Pretrained(seed: 3);
        Experts = [TinyClip.Expert(Pretrained, 31, scale: 0.25), TinyClip.Expert(Pretrained, 32, scale: 0.25)];
        var tasks = new List<(TaskDataset, TaskHead)>();
        using var noGrad = no_grad();
        for (int t = 0; t < Experts.Length; t++)
        {
            using var generator = new Generator((ulong)(100 + t));
            var images = randn(new long[] { examples, 3, 8, 8 }, generator: generator);
            using var features = Experts[t].GetImageFeatures(images);
            var centred = features - features.mean([0L], keepdim: true);
            var weight = randn(new long[] { Classes, features.shape[1] }, generator: generator) * (1.5 / centred.std().item<float>());
            var head = new LinearClassificationHead(weight, -(weight.matmul(features.mean([0L]))));
            head.SetFrozen(true);
            var labels = head.call(features).argmax(1);
            tasks.Add((new InMemoryTaskDataset($"task{t}", images, labels, Classes), head));
        }

        Tasks = tasks.Select(t => ClassificationTask.Of(t.Item1, t.Item2)).ToList();
    }

    public ClipVisionModel Pretrained { get; }

    public ClipVisionModel[] Experts { get; }

    public IReadOnlyList<ClassificationTask> Tasks { get; }

    public ParetoUpscaledModel BuildPareto(int depth = 2) =>
        ModelUpscaler.For(Pretrained).WithExperts(Experts).WithRouterDepth(depth).WithInitLambda(0.3).WithSeed(7).BuildPareto();

    public void Dispose()
    {
        foreach (var task in Tasks)
        {
            task.Data.Dispose();
            task.Head.Dispose();
        }

        foreach (var expert in Experts)
        {
            expert.Dispose();
        }

        Pretrained.Dispose();
    }
}
