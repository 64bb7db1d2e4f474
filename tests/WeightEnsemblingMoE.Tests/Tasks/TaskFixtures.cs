using System.Text.Json;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Tasks;

/// <summary>Reads the PyTorch reference values written by tools/fixtures/taskdata.py.</summary>
internal static class TaskFixtures
{
    public static JsonElement Load(string name)
    {
        string path = Path.Combine(AppContext.BaseDirectory, "Fixtures", "Tasks", name);
        using var document = JsonDocument.Parse(File.ReadAllText(path));
        return document.RootElement.Clone();
    }

    public static float[] Floats(JsonElement root, string property) =>
        root.GetProperty(property).EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();

    public static long[] Shape(JsonElement root, string property) =>
        root.GetProperty(property).EnumerateArray().Select(e => e.GetInt64()).ToArray();

    public static Tensor Tensor(JsonElement root, string values, string shape) =>
        tensor(Floats(root, values), Shape(root, shape));

    /// <summary>A dataset of <paramref name="count"/> 1×2×2 images, image i filled with the value i, labelled i mod classCount.</summary>
    public static InMemoryTaskDataset Indexed(int count, int classCount = 3, bool labelled = true)
    {
        using var scope = NewDisposeScope();
        var images = arange(count, dtype: ScalarType.Float32).reshape(count, 1, 1, 1).expand(count, 1, 2, 2).contiguous();
        var labels = labelled ? arange(count, dtype: ScalarType.Int64).remainder(classCount) : null;
        return new InMemoryTaskDataset("indexed", images, labels, classCount);
    }

    /// <summary>The example indices of a batch from <see cref="Indexed"/>.</summary>
    public static long[] Ids(TaskBatch batch) =>
        batch.Images[.., 0, 0, 0].to_type(ScalarType.Int64).data<long>().ToArray();
}
