using System.Text.Json;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Moe;

/// <summary>The PyTorch reference values of tools/fixtures/moe_reference.py (Fixtures/Moe/moe_reference.json).</summary>
internal static class MoeReference
{
    private static readonly Lazy<Dictionary<string, (long[] Shape, float[] Data)>> Values = new(Load);

    /// <summary>A new float32 tensor with the stored values of <paramref name="name"/>.</summary>
    public static Tensor Get(string name)
    {
        var (shape, data) = Values.Value[name];
        return tensor(data, shape);
    }

    /// <summary>The tensors stored under <paramref name="prefix"/>, keyed by the rest of their name.</summary>
    public static Dictionary<string, Tensor> GetAll(string prefix)
        => Values.Value.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal))
            .ToDictionary(k => k[prefix.Length..], Get);

    private static Dictionary<string, (long[] Shape, float[] Data)> Load()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "Fixtures", "Moe", "moe_reference.json");
        using var document = JsonDocument.Parse(File.ReadAllText(path));
        var result = new Dictionary<string, (long[], float[])>(StringComparer.Ordinal);
        foreach (var entry in document.RootElement.GetProperty("tensors").EnumerateObject())
        {
            var shape = entry.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var data = entry.Value.GetProperty("data").EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();
            result[entry.Name] = (shape, data);
        }

        return result;
    }
}
