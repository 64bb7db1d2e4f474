using System.Text.Json;
using static TorchSharp.torch;

namespace WeightEnsembling.SafeTensors;

/// <summary>
/// A Hugging Face safetensors checkpoint: one <c>model.safetensors</c> file or shards listed by
/// <c>model.safetensors.index.json</c>. Names and infos come from the index; each shard is opened (memory-mapped)
/// once, on first use, and tensors are read lazily as in <see cref="SafeTensorsFile"/>.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    private readonly string? _indexPath;
    private readonly Dictionary<string, string> _shardOf;
    private readonly Dictionary<string, SafeTensorsFile> _open = new(StringComparer.Ordinal);
    private readonly string[] _names;
    private readonly object _gate = new();
    private bool _disposed;

    private SafeTensorsCheckpoint(string? indexPath, Dictionary<string, string> shardOf, IReadOnlyDictionary<string, string> metadata,
        SafeTensorsFile? single)
    {
        _indexPath = indexPath;
        _shardOf = shardOf;
        _names = shardOf.Keys.Order(StringComparer.Ordinal).ToArray();
        Metadata = metadata;
        ShardPaths = shardOf.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        if (single is not null)
        {
            _open.Add(single.FilePath, single);
        }
    }

    /// <summary>The names of all tensors, sorted ordinally.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>
    /// The metadata: the index's <c>metadata</c> object (values as text, e.g. <c>total_size</c>) for a sharded checkpoint,
    /// the file's <c>__metadata__</c> for a single file.
    /// </summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The full paths of the safetensors files, sorted.</summary>
    public IReadOnlyList<string> ShardPaths { get; }

    /// <summary>
    /// Opens a checkpoint from a folder (holding <c>model.safetensors</c>, or else <c>model.safetensors.index.json</c>),
    /// a <c>.safetensors</c> file, or an index file (<c>.json</c>).
    /// </summary>
    /// <param name="pathOrFolder">The folder, file or index.</param>
    /// <returns>The checkpoint; dispose it to close its shards.</returns>
    /// <exception cref="FileNotFoundException">The path, the folder's checkpoint or a shard listed by the index is missing.</exception>
    /// <exception cref="SafeTensorsFormatException">The index or a file breaks a rule of the format.</exception>
    public static SafeTensorsCheckpoint Open(string pathOrFolder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(pathOrFolder);
        var fullPath = Path.GetFullPath(pathOrFolder);
        if (Directory.Exists(fullPath))
        {
            var single = Path.Combine(fullPath, SafeTensorsWriter.SingleFileName);
            var index = Path.Combine(fullPath, SafeTensorsWriter.IndexFileName);
            if (File.Exists(single))
            {
                fullPath = single;
            }
            else if (File.Exists(index))
            {
                fullPath = index;
            }
            else
            {
                throw new FileNotFoundException(
                    $"The folder '{fullPath}' holds neither '{SafeTensorsWriter.SingleFileName}' nor '{SafeTensorsWriter.IndexFileName}'.", single);
            }
        }
        if (!File.Exists(fullPath))
        {
            throw new FileNotFoundException($"The checkpoint '{fullPath}' does not exist.", fullPath);
        }

        if (fullPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            return OpenIndex(fullPath);
        }

        var file = SafeTensorsFile.Open(fullPath);
        var shardOf = file.Names.ToDictionary(n => n, _ => file.FilePath, StringComparer.Ordinal);
        return new SafeTensorsCheckpoint(null, shardOf, file.Metadata, file);
    }

    private static SafeTensorsCheckpoint OpenIndex(string indexPath)
    {
        var folder = Path.GetDirectoryName(indexPath)!;
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException ex)
        {
            throw new SafeTensorsFormatException(indexPath, null, $"the index is not valid JSON: {ex.Message}", ex);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("weight_map", out var weightMap) || weightMap.ValueKind != JsonValueKind.Object)
            {
                throw new SafeTensorsFormatException(indexPath, null, "the index has no 'weight_map' object.");
            }

            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            if (root.TryGetProperty("metadata", out var meta) && meta.ValueKind == JsonValueKind.Object)
            {
                foreach (var entry in meta.EnumerateObject())
                {
                    metadata[entry.Name] = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : entry.Value.GetRawText();
                }
            }

            var shardOf = new Dictionary<string, string>(StringComparer.Ordinal);
            var checkedShards = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in weightMap.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                {
                    throw new SafeTensorsFormatException(indexPath, entry.Name, "the weight_map value is not a file name.");
                }
                var fileName = entry.Value.GetString()!;
                if (fileName.Length == 0 || Path.IsPathRooted(fileName) || Path.GetFileName(fileName) != fileName)
                {
                    throw new SafeTensorsFormatException(indexPath, entry.Name,
                        $"the weight_map names '{fileName}', which is not a plain file name in the index's folder.");
                }
                var shardPath = Path.Combine(folder, fileName);
                if (checkedShards.Add(shardPath) && !File.Exists(shardPath))
                {
                    throw new FileNotFoundException(
                        $"The index '{indexPath}' maps tensor '{entry.Name}' to the shard '{fileName}', which does not exist.", shardPath);
                }
                if (!shardOf.TryAdd(entry.Name, shardPath))
                {
                    throw new SafeTensorsFormatException(indexPath, entry.Name, "the weight_map lists the name more than once.");
                }
            }
            return new SafeTensorsCheckpoint(indexPath, shardOf, metadata.AsReadOnly(), null);
        }
    }

    /// <summary>Whether the checkpoint has a tensor of this name.</summary>
    /// <param name="name">The tensor name.</param>
    /// <returns>True when the index (or the single file) lists the tensor.</returns>
    public bool Contains(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _shardOf.ContainsKey(name);
    }

    /// <summary>What the shard's header says about one tensor (opens that shard if needed).</summary>
    /// <param name="name">The tensor name.</param>
    /// <returns>The tensor's dtype, shape and offsets within its shard.</returns>
    /// <exception cref="KeyNotFoundException">The checkpoint has no tensor of this name.</exception>
    /// <exception cref="SafeTensorsFormatException">The index maps the name to a shard that lacks it.</exception>
    public SafeTensorInfo GetInfo(string name) => ShardFor(name).GetInfo(name);

    /// <summary>Loads one tensor from its shard (see <see cref="SafeTensorsFile.Load(string)"/>).</summary>
    /// <param name="name">The tensor name.</param>
    /// <returns>A new CPU tensor; the caller owns it.</returns>
    /// <exception cref="KeyNotFoundException">The checkpoint has no tensor of this name.</exception>
    /// <exception cref="SafeTensorsFormatException">The index maps the name to a shard that lacks it.</exception>
    public Tensor Load(string name) => ShardFor(name).Load(name);

    /// <summary>Loads every tensor of every shard.</summary>
    /// <returns>The tensors by name; the caller owns them.</returns>
    public Dictionary<string, Tensor> LoadAll()
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var name in _names)
            {
                result.Add(name, Load(name));
            }
            return result;
        }
        catch
        {
            foreach (var tensor in result.Values)
            {
                tensor.Dispose();
            }
            throw;
        }
    }

    private SafeTensorsFile ShardFor(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_shardOf.TryGetValue(name, out var shardPath))
        {
            throw new KeyNotFoundException($"The checkpoint '{_indexPath ?? ShardPaths[0]}' has no tensor named '{name}'.");
        }
        SafeTensorsFile shard;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_open.TryGetValue(shardPath, out shard!))
            {
                shard = SafeTensorsFile.Open(shardPath);
                _open.Add(shardPath, shard);
            }
        }
        if (!shard.Contains(name))
        {
            throw new SafeTensorsFormatException(shardPath, name,
                $"the index '{_indexPath}' maps the tensor to this shard, but the shard does not contain it.");
        }
        return shard;
    }

    /// <summary>Closes every shard opened so far. Tensors already loaded stay valid.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            foreach (var shard in _open.Values)
            {
                shard.Dispose();
            }
            _open.Clear();
        }
    }
}
