using WeightEnsembling.Clip;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Training;

/// <summary>A tiny pre-trained model, two random experts and two random-labelled tasks with linear heads.</summary>
internal sealed class TrainingFixture : IDisposable
{
    public TrainingFixture(int expertSeed = 11)
    {
        Pretrained = TinyClip.Pretrained();
        Experts = [TinyClip.Expert(Pretrained, expertSeed), TinyClip.Expert(Pretrained, expertSeed + 1)];
        var tasks = new List<ClassificationTask>();
        for (int k = 0; k < 2; k++)
        {
            using var images = TinyClip.Images(20, 100 + k);
            using var generator = new Generator((ulong)(200 + k));
            using var labels = randint(0, 3, new long[] { 20 }, generator: generator);
            var head = new LinearClassificationHead(randn(new long[] { 3, 8 }, generator: generator), zeros(3));
            tasks.Add(new ClassificationTask($"t{k}", new InMemoryTaskDataset($"t{k}", images, labels, 3), head));
        }

        Tasks = tasks;
    }

    public ClipVisionModel Pretrained { get; }

    public ClipVisionModel[] Experts { get; }

    public IReadOnlyList<ClassificationTask> Tasks { get; }

    public UpscaledModel Upscale(Func<ModelUpscaler, ModelUpscaler>? configure = null) =>
        (configure ?? (u => u))(ModelUpscaler.For(Pretrained).WithExperts(Experts)).Build();

    public static AdaptationOptions Options(int steps = 4) => new() { LearningRate = 1e-2, Steps = steps, BatchSize = 8 };

    public static Dictionary<string, Tensor> Snapshot(IAdaptableModel model) =>
        model.NamedTrainableParameters().ToDictionary(p => p.Key, p => p.Value.detach().clone());

    public static bool BitEqual(IReadOnlyDictionary<string, Tensor> a, IReadOnlyDictionary<string, Tensor> b) =>
        a.Count == b.Count && a.All(p => b.TryGetValue(p.Key, out var other) && p.Value.equal(other).all().item<bool>());

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
