using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Zoo;

/// <summary>One task of the suite: a dataset and a documented domain shift applied to its images.</summary>
/// <param name="Name">The task name.</param>
/// <param name="Dataset">The prepared dataset it reads (<c>fashion</c>, <c>mnist</c>, <c>uci</c>).</param>
/// <param name="Shift">The domain shift: <c>none</c>, <c>invert</c> (1 − x) or <c>rot90</c> (a quarter turn).</param>
public sealed record SuiteTask(string Name, string Dataset, string Shift)
{
    /// <summary>The six tasks: three datasets, each upright and under one shift.</summary>
    public static readonly IReadOnlyList<SuiteTask> All =
    [
        new("fashion", "fashion", "none"),
        new("mnist", "mnist", "none"),
        new("uci-digits", "uci", "none"),
        new("fashion-inverted", "fashion", "invert"),
        new("mnist-rot90", "mnist", "rot90"),
        new("uci-digits-inverted", "uci", "invert"),
    ];

    /// <summary>Loads a split as a labeled dataset: images [N, 1, 28, 28] scaled to [−1, 1] after the shift.</summary>
    public InMemoryTaskDataset Load(string dataFolder, string split, int? limit = null)
    {
        var (raw, labels) = SuiteData.Load(dataFolder, Dataset, split);
        using var scope = NewDisposeScope();
        var images = raw.to(ScalarType.Float32).unsqueeze(1) / 255f;
        images = Shift switch
        {
            "invert" => 1f - images,
            "rot90" => images.rot90(1, (2, 3)),
            _ => images,
        };
        images = (images - 0.5f) / 0.5f;
        if (limit is int n && n < images.shape[0])
        {
            images = images.narrow(0, 0, n);
            labels = labels.narrow(0, 0, n);
        }

        var dataset = new InMemoryTaskDataset($"{Name}", images, labels, 10);
        raw.Dispose();
        return dataset;
    }
}
