using System.Text.Json;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// Opens the weights of a Hugging Face model folder: <c>model.safetensors</c> if present (as HF prefers it), otherwise the
/// shards listed by <c>model.safetensors.index.json</c>. A small stand-in until the shared checkpoint reader lands.
/// </summary>
internal sealed class ClipCheckpointReader : IDisposable
{
    private readonly List<SafeTensorsFile> _files = [];
    private readonly Dictionary<string, SafeTensorsFile> _byName = new(StringComparer.Ordinal);

    private ClipCheckpointReader(string description) => Description = description;

    /// <summary>The file (or index) the weights come from, for messages.</summary>
    public string Description { get; }

    /// <summary>Every tensor name in the checkpoint.</summary>
    public IEnumerable<string> Names => _byName.Keys;

    public static ClipCheckpointReader Open(string folder)
    {
        string single = Path.Combine(folder, SafeTensorsWriter.SingleFileName);
        string index = Path.Combine(folder, SafeTensorsWriter.IndexFileName);
        if (File.Exists(single))
        {
            var reader = new ClipCheckpointReader(single);
            reader.Add(SafeTensorsFile.Open(single), null);
            return reader;
        }

        if (!File.Exists(index))
        {
            throw new FileNotFoundException(
                $"The model folder '{folder}' has neither {SafeTensorsWriter.SingleFileName} nor {SafeTensorsWriter.IndexFileName}.", single);
        }

        var sharded = new ClipCheckpointReader(index);
        try
        {
            foreach (var (shard, names) in ReadIndex(index))
            {
                string path = Path.Combine(folder, shard);
                if (!File.Exists(path))
                {
                    throw new FileNotFoundException($"The shard '{shard}' listed in '{index}' does not exist.", path);
                }

                sharded.Add(SafeTensorsFile.Open(path), names);
            }

            return sharded;
        }
        catch
        {
            sharded.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The file that holds <paramref name="name"/>.</summary>
    public string FileOf(string name) => _byName.TryGetValue(name, out var file) ? file.FilePath : Description;

    public Tensor Load(string name) => _byName[name].Load(name);

    public void Dispose()
    {
        foreach (var file in _files)
        {
            file.Dispose();
        }

        _files.Clear();
        _byName.Clear();
    }

    private void Add(SafeTensorsFile file, IReadOnlyList<string>? names)
    {
        _files.Add(file);
        foreach (string name in names ?? file.Names)
        {
            if (!file.Contains(name))
            {
                throw new InvalidDataException($"Tensor '{name}' is mapped to '{file.FilePath}' by '{Description}' but that file lacks it.");
            }

            _byName[name] = file;
        }
    }

    private static IEnumerable<(string Shard, IReadOnlyList<string> Names)> ReadIndex(string index)
    {
        Dictionary<string, List<string>> byShard = new(StringComparer.Ordinal);
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(index));
            if (!document.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"The index '{index}' has no 'weight_map' object.");
            }

            foreach (var entry in map.EnumerateObject())
            {
                string shard = entry.Value.ValueKind == JsonValueKind.String
                    ? entry.Value.GetString()!
                    : throw new InvalidDataException($"The index '{index}' maps tensor '{entry.Name}' to a non-string.");
                if (shard.Length == 0 || Path.GetFileName(shard) != shard)
                {
                    throw new InvalidDataException($"The index '{index}' maps tensor '{entry.Name}' to the invalid shard name '{shard}'.");
                }

                if (!byShard.TryGetValue(shard, out var names))
                {
                    byShard[shard] = names = [];
                }

                names.Add(entry.Name);
            }
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"The index '{index}' is not valid JSON: {e.Message}", e);
        }

        return byShard.Select(kv => (kv.Key, (IReadOnlyList<string>)kv.Value));
    }
}
