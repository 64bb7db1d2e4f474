using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Merging;

/// <summary>The two-task reference written by tools/fixtures/baselines_reference.py (PyTorch forward hooks and autograd).</summary>
internal sealed class FisherRegMeanFixture : IDisposable
{
    private static readonly string Folder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "Merging", "baselines");

    public FisherRegMeanFixture()
    {
        var config = ClipVisionConfig.FromFile(Path.Combine(Folder, "config.json"));
        using var data = SafeTensorsFile.Open(Path.Combine(Folder, "data.safetensors"));
        using var expected = SafeTensorsFile.Open(Path.Combine(Folder, "expected.safetensors"));
        Expected = expected.LoadAll();
        for (int t = 0; t < 2; t++)
        {
            using var file = SafeTensorsFile.Open(Path.Combine(Folder, $"model{t}.safetensors"));
            var weights = file.LoadAll();
            var model = new ClipVisionModel(config);
            model.eval();
            StateDict.LoadInto(model, weights, strict: true);
            Models.Add(model);
            Datasets.Add(new InMemoryTaskDataset($"task{t}", data.Load($"images/{t}"), data.Load($"labels/{t}"), 3));
            Heads.Add(new LinearClassificationHead(data.Load($"head_weight/{t}"), data.Load($"head_bias/{t}")));
        }
    }

    public List<ClipVisionModel> Models { get; } = [];

    public List<TaskDataset> Datasets { get; } = [];

    public List<TaskHead> Heads { get; } = [];

    public Dictionary<string, Tensor> Expected { get; }

    /// <summary>The expected tensors under <paramref name="prefix"/> (e.g. <c>gram/0/</c>), keyed by the rest of the name.</summary>
    public Dictionary<string, Tensor> Section(string prefix) => Expected
        .Where(p => p.Key.StartsWith(prefix, StringComparison.Ordinal))
        .ToDictionary(p => p.Key[prefix.Length..], p => p.Value);

    /// <summary>max |a − b| / max(1, max |b|).</summary>
    public static double RelativeError(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var e = expected.to(ScalarType.Float64);
        return ((actual.to(ScalarType.Float64) - e).abs().max() / e.abs().max().clamp_min(1)).item<double>();
    }

    public void Dispose()
    {
        foreach (var model in Models)
        {
            model.Dispose();
        }

        foreach (var dataset in Datasets)
        {
            dataset.Dispose();
        }

        foreach (var head in Heads)
        {
            head.Dispose();
        }

        foreach (var tensor in Expected.Values)
        {
            tensor.Dispose();
        }
    }
}
