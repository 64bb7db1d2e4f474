using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Data;
using WeightEnsembling.Experiments;
using WeightEnsembling.Models;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.World;

/// <summary>
/// A built world read back for merging: the pre-trained image tower θ_0 (with its projection), one expert per task and
/// each task's validation and test image folders with its frozen zero-shot head, in the config's task order.
/// </summary>
public sealed class WorldZoo : IDisposable
{
    private WorldZoo(ClipVisionModel pretrained, List<ClipVisionModel> experts, List<BenchmarkTask> tasks)
    {
        Pretrained = pretrained;
        Experts = experts;
        Tasks = tasks;
    }

    /// <summary>θ_0: the pre-trained CLIP's image tower with its projection.</summary>
    public ClipVisionModel Pretrained { get; }

    /// <summary>The experts, in task order.</summary>
    public IReadOnlyList<ClipVisionModel> Experts { get; }

    /// <summary>The tasks (validation and test image folders, frozen zero-shot heads), in the config's order.</summary>
    public IReadOnlyList<BenchmarkTask> Tasks { get; }

    /// <summary>Opens the world built under <paramref name="worldFolder"/> by <see cref="WorldBuilder"/> from <paramref name="config"/>.</summary>
    /// <exception cref="DirectoryNotFoundException">A stage folder is missing (the world is not built).</exception>
    public static WorldZoo Open(WorldConfig config, string worldFolder)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentException.ThrowIfNullOrWhiteSpace(worldFolder);
        foreach (string stage in new[] { "data", "pretrained", "zoo" })
        {
            if (!File.Exists(Path.Combine(worldFolder, stage, ".stage")))
            {
                throw new DirectoryNotFoundException($"The world in '{worldFolder}' has no built '{stage}' stage; run the build command first.");
            }
        }

        ClipVisionModel? pretrained = null;
        var experts = new List<ClipVisionModel>();
        var tasks = new List<BenchmarkTask>();
        try
        {
            using (var clip = ClipModel.FromPretrained(Path.Combine(worldFolder, "pretrained")))
            {
                pretrained = new ClipVisionModel(clip.Config.VisionConfig);
                StateDict.LoadInto(pretrained, clip.VisionModel.state_dict());
            }

            pretrained.eval();
            var processor = WorldBuilder.Processor(config.ImageSize);
            foreach (var task in config.Tasks)
            {
                var expert = ClipVisionModel.FromPretrained(Path.Combine(worldFolder, "zoo", "experts", task.Name));
                expert.eval();
                experts.Add(expert);
                string folder = Path.Combine(worldFolder, "data", "tasks", task.Name);
                tasks.Add(new BenchmarkTask(
                    task.Name,
                    InMemory(Path.Combine(folder, "val"), processor, task.Name),
                    InMemory(Path.Combine(folder, "test"), processor, task.Name),
                    TaskHead.Load(Path.Combine(worldFolder, "zoo", "heads", $"{task.Name}.safetensors"))));
            }

            return new WorldZoo(pretrained, experts, tasks);
        }
        catch
        {
            pretrained?.Dispose();
            experts.ForEach(e => e.Dispose());
            tasks.ForEach(Dispose);
            throw;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Pretrained.Dispose();
        foreach (var expert in Experts)
        {
            expert.Dispose();
        }

        foreach (var task in Tasks)
        {
            Dispose(task);
        }
    }

    // Decoded once: the λ search, the probes and test-time adaptation read each split many times.
    private static InMemoryTaskDataset InMemory(string folder, WeightEnsembling.Images.ClipImageProcessor processor, string name)
    {
        using var files = ImageFolderDataset.Open(folder, processor, name: name);
        using var all = files.Batches(checked((int)files.Count)).Single();
        return new InMemoryTaskDataset(name, all.Images, all.Labels, files.ClassCount);
    }

    private static void Dispose(BenchmarkTask task)
    {
        task.Validation.Dispose();
        task.Test.Dispose();
        task.Head.Dispose();
    }
}
