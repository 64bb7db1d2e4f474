using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Training;

/// <summary>
/// Learnable synthetic tasks on tiny CLIP models: task k has its own input distribution (a per-task offset on one colour
/// channel, so a router can tell the tasks apart) and its own labelling rule (argmax of a fixed random projection of
/// the pixels); expert k is θ_0 with its attention and MLP weights fine-tuned on task k through a fixed random head.
/// </summary>
internal sealed class SyntheticTasks : IDisposable
{
    public const int ClassCount = 3;

    private SyntheticTasks(ClipVisionModel pretrained, ClipVisionModel[] experts, ClassificationTask[] tasks)
    {
        Pretrained = pretrained;
        Experts = experts;
        Tasks = tasks;
    }

    public ClipVisionModel Pretrained { get; }

    public ClipVisionModel[] Experts { get; }

    /// <summary>Labelled tasks (the labels are ignored by adaptation).</summary>
    public ClassificationTask[] Tasks { get; }

    public static SyntheticTasks Create(int taskCount = 2, int examples = 96, int fineTuneSteps = 100, int seed = 7)
    {
        var pretrained = TinyClip.Pretrained(seed);
        var tasks = new ClassificationTask[taskCount];
        var allImages = new Tensor[taskCount];
        var allLabels = new Tensor[taskCount];
        using (var generator = new Generator((ulong)seed))
        {
            for (int k = 0; k < taskCount; k++)
            {
                using var scope = NewDisposeScope();
                var noise = randn(new long[] { examples, 3, 8, 8 }, generator: generator);
                var rule = randn(new long[] { 3 * 8 * 8, ClassCount }, generator: generator);
                var labels = noise.flatten(1).matmul(rule).argmax(1);
                var images = noise.clone();
                images.select(1, k % 3).add_(2.0);
                var head = new LinearClassificationHead(
                    randn(new long[] { ClassCount, TinyClip.Config.ProjectionDim }, generator: generator),
                    zeros(ClassCount));
                var data = new InMemoryTaskDataset($"task{k}", images, labels, ClassCount);
                tasks[k] = new ClassificationTask(data.Name, data, head);
                allImages[k] = images.DetachFromDisposeScope();
                allLabels[k] = labels.DetachFromDisposeScope();
            }
        }

        // Models are built outside dispose scopes: a scope would dispose their embedding parameters.
        var experts = new ClipVisionModel[taskCount];
        for (int k = 0; k < taskCount; k++)
        {
            experts[k] = FineTune(pretrained, k, tasks, allImages, allLabels, fineTuneSteps);
        }

        foreach (var tensor in allImages.Concat(allLabels))
        {
            tensor.Dispose();
        }

        return new SyntheticTasks(pretrained, experts, tasks);
    }

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

    /// <summary>
    /// Fine-tunes expert k's attention and MLP weights: cross-entropy on task k through head k, and, like a specialised
    /// expert, uninformative (uniform) predictions of the other tasks' heads on the other tasks' inputs.
    /// </summary>
    private static ClipVisionModel FineTune(ClipVisionModel pretrained, int k, ClassificationTask[] tasks, Tensor[] images, Tensor[] labels, int steps)
    {
        var expert = TinyClip.WithWeights(pretrained.state_dict());
        var trainable = new List<TorchSharp.Modules.Parameter>();
        foreach (var (name, parameter) in expert.named_parameters())
        {
            bool train = name.Contains(".self_attn.") || name.Contains(".mlp.");
            parameter.requires_grad = train;
            if (train)
            {
                trainable.Add(parameter);
            }
        }

        using var optimizer = optim.Adam(trainable, lr: 1e-2);
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var loss = nn.functional.cross_entropy(tasks[k].Head.forward(expert.GetImageFeatures(images[k])), labels[k]);
            for (int j = 0; j < tasks.Length; j++)
            {
                if (j != k)
                {
                    var logits = tasks[j].Head.forward(expert.GetImageFeatures(images[j]));
                    loss = loss - logits.log_softmax(1).mean();
                }
            }

            loss.backward();
            optimizer.step();
        }

        foreach (var parameter in expert.parameters())
        {
            parameter.requires_grad = false;
        }

        return expert;
    }
}
