using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using static TorchSharp.torch;

namespace WeightEnsembling.SafeTensors;

/// <summary>
/// A Hugging Face safetensors checkpoint: one <c>model.safetensors</c> file or shards listed by
/// <c>model.safetensors.index.json</c>. Names and infos come from the index; each shard is opened once, on first use,
/// and tensors are read lazily as in <see cref="SafeTensorsFile"/>. An index that records its shards' sizes and SHA-256
/// (as <see cref="SafeTensorsWriter.SaveSharded"/> writes it) is checked against the shards when it is opened, so that
/// a folder mixing shards of different saves is refused.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    private readonly string? _indexPath;
    private readonly Dictionary<string, string> _shardOf;
    private readonly Dictionary<string, SafeTensorsFile> _open = new(StringComparer.Ordinal);
    private readonly string[] _names;
    private readonly object _gate = new();
    private readonly SafeTensorsReadOptions _options;
    private bool _disposed;

    private SafeTensorsCheckpoint(string? indexPath, Dictionary<string, string> shardOf, IReadOnlyDictionary<string, string> metadata,
        SafeTensorsFile? single, SafeTensorsReadOptions options)
    {
        _indexPath = indexPath;
        _options = options;
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
    /// a <c>.safetensors</c> file, or an index file (<c>.json</c>), with the default limits.
    /// </summary>
    /// <param name="pathOrFolder">The folder, file or index.</param>
    /// <returns>The checkpoint; dispose it to close its shards.</returns>
    /// <exception cref="FileNotFoundException">The path, the folder's checkpoint or a shard listed by the index is missing.</exception>
    /// <exception cref="SafeTensorsFormatException">The index or a file breaks a rule of the format or a limit, or a shard's size differs from the one the index records.</exception>
    public static SafeTensorsCheckpoint Open(string pathOrFolder) => Open(pathOrFolder, SafeTensorsReadOptions.Default);

    /// <summary>
    /// Opens a checkpoint from a folder (holding <c>model.safetensors</c>, or else <c>model.safetensors.index.json</c>),
    /// a <c>.safetensors</c> file, or an index file (<c>.json</c>), within the given limits. When the index records the
    /// shards' sizes and SHA-256, every shard's size is checked now, and its hash too when
    /// <see cref="SafeTensorsReadOptions.VerifyShardHashes"/> is set.
    /// </summary>
    /// <param name="pathOrFolder">The folder, file or index.</param>
    /// <param name="options">The limits and checks.</param>
    /// <returns>The checkpoint; dispose it to close its shards.</returns>
    /// <exception cref="FileNotFoundException">The path, the folder's checkpoint or a shard listed by the index is missing.</exception>
    /// <exception cref="SafeTensorsFormatException">The index or a file breaks a rule of the format or a limit, or a shard differs from what the index records.</exception>
    public static SafeTensorsCheckpoint Open(string pathOrFolder, SafeTensorsReadOptions options)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(pathOrFolder);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
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
            return OpenIndex(fullPath, options);
        }

        var file = SafeTensorsFile.Open(fullPath, options);
        var shardOf = file.Names.ToDictionary(n => n, _ => file.FilePath, StringComparer.Ordinal);
        return new SafeTensorsCheckpoint(null, shardOf, file.Metadata, file, options);
    }

    private static SafeTensorsCheckpoint OpenIndex(string indexPath, SafeTensorsReadOptions options)
    {
        var folder = Path.GetDirectoryName(indexPath)!;
        var index = ReadIndex(indexPath, options);
        var shardOf = new Dictionary<string, string>(index.WeightMap.Count, StringComparer.Ordinal);
        var checkedShards = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, fileName) in index.WeightMap)
        {
            var shardPath = Path.Combine(folder, fileName);
            if (checkedShards.Add(fileName) && !File.Exists(shardPath))
            {
                throw new FileNotFoundException(
                    $"The index '{indexPath}' maps tensor '{name}' to the shard '{fileName}', which does not exist.", shardPath);
            }
            shardOf.Add(name, shardPath);
        }
        if (index.Shards is not null)
        {
            CheckShards(indexPath, folder, index.Shards, checkedShards, options.VerifyShardHashes);
        }
        return new SafeTensorsCheckpoint(indexPath, shardOf, index.Metadata.AsReadOnly(), null, options);
    }

    private static void CheckShards(string indexPath, string folder, Dictionary<string, (long Size, string Sha256)> shards,
        HashSet<string> mapped, bool verifyHashes)
    {
        foreach (var fileName in mapped)
        {
            if (!shards.ContainsKey(fileName))
            {
                throw new SafeTensorsFormatException(indexPath, null,
                    $"'{SafeTensorsWriter.ShardsKey}' records no size and hash for the shard '{fileName}' that the weight_map uses.");
            }
        }
        foreach (var (fileName, (size, sha256)) in shards)
        {
            var shardPath = Path.Combine(folder, fileName);
            var info = new FileInfo(shardPath);
            if (!info.Exists)
            {
                throw new FileNotFoundException($"The index '{indexPath}' records the shard '{fileName}', which does not exist.", shardPath);
            }
            if (info.Length != size)
            {
                throw new SafeTensorsFormatException(shardPath, null,
                    $"the shard has {info.Length} bytes but the index '{indexPath}' records {size}: the folder mixes files of different saves.");
            }
            if (verifyHashes)
            {
                using var stream = new FileStream(shardPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 20);
                var actual = Convert.ToHexStringLower(SHA256.HashData(stream));
                if (!string.Equals(actual, sha256, StringComparison.OrdinalIgnoreCase))
                {
                    throw new SafeTensorsFormatException(shardPath, null,
                        $"the shard's SHA-256 is {actual} but the index '{indexPath}' records {sha256}: the folder mixes files of different saves.");
                }
            }
        }
    }

    private sealed record IndexContent(
        Dictionary<string, string> Metadata, Dictionary<string, string> WeightMap, Dictionary<string, (long Size, string Sha256)>? Shards);

    /// <summary>Reads an index in one streaming pass, with the same JSON rules and limits as a file header.</summary>
    private static IndexContent ReadIndex(string indexPath, SafeTensorsReadOptions options)
    {
        byte[] bytes;
        using (var stream = new FileStream(indexPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1))
        {
            if (stream.Length > options.MaxIndexBytes)
            {
                throw new SafeTensorsFormatException(indexPath, null,
                    $"the index has {stream.Length} bytes, more than {options.MaxIndexBytes}, the limit (SafeTensorsReadOptions.MaxIndexBytes).");
            }
            bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
        }
        if (!Utf8.IsValid(bytes))
        {
            throw new SafeTensorsFormatException(indexPath, null, "the index is not valid UTF-8.");
        }

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        Dictionary<string, string>? weightMap = null;
        Dictionary<string, (long, string)>? shards = null;
        var sawMetadata = false;
        var reader = new Utf8JsonReader(bytes, StrictJson.ReaderOptions);
        try
        {
            StrictJson.Next(ref reader);
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                throw new SafeTensorsFormatException(indexPath, null, "the index has no 'weight_map' object.");
            }
            while (true)
            {
                StrictJson.Next(ref reader);
                if (reader.TokenType == JsonTokenType.EndObject)
                {
                    break;
                }
                StrictJson.CheckEscapes(ref reader);
                if (reader.ValueTextEquals("weight_map"u8))
                {
                    StrictJson.Next(ref reader);
                    if (weightMap is not null)
                    {
                        throw new SafeTensorsFormatException(indexPath, null, "the index has the key 'weight_map' more than once.");
                    }
                    weightMap = ReadWeightMap(ref reader, indexPath, options);
                }
                else if (reader.ValueTextEquals("metadata"u8))
                {
                    StrictJson.Next(ref reader);
                    if (sawMetadata)
                    {
                        throw new SafeTensorsFormatException(indexPath, null, "the index has the key 'metadata' more than once.");
                    }
                    sawMetadata = true;
                    ReadIndexMetadata(ref reader, bytes, indexPath, options, metadata);
                }
                else if (reader.ValueTextEquals(SafeTensorsWriter.ShardsKey))
                {
                    StrictJson.Next(ref reader);
                    if (shards is not null)
                    {
                        throw new SafeTensorsFormatException(indexPath, null, $"the index has the key '{SafeTensorsWriter.ShardsKey}' more than once.");
                    }
                    shards = ReadShards(ref reader, indexPath, options);
                }
                else
                {
                    StrictJson.Next(ref reader);
                    StrictJson.SkipValue(ref reader);
                }
            }
            StrictJson.End(ref reader);
        }
        catch (JsonException ex)
        {
            throw new SafeTensorsFormatException(indexPath, null, $"the index is not valid JSON: {ex.Message}", ex);
        }
        if (weightMap is null)
        {
            throw new SafeTensorsFormatException(indexPath, null, "the index has no 'weight_map' object.");
        }
        return new IndexContent(metadata, weightMap, shards);
    }

    private static string ReadKey(ref Utf8JsonReader reader, string indexPath, SafeTensorsReadOptions options, string what)
    {
        var raw = reader.ValueSpan.Length;
        if (raw > options.MaxNameBytes && (!reader.ValueIsEscaped || raw > 6L * options.MaxNameBytes))
        {
            throw KeyTooLong(indexPath, options, what);
        }
        var key = StrictJson.GetString(ref reader);
        if (reader.ValueIsEscaped && Encoding.UTF8.GetByteCount(key) > options.MaxNameBytes)
        {
            throw KeyTooLong(indexPath, options, what);
        }
        return key;
    }

    private static SafeTensorsFormatException KeyTooLong(string indexPath, SafeTensorsReadOptions options, string what) =>
        new(indexPath, null, $"a {what} is longer than {options.MaxNameBytes} UTF-8 bytes, the limit (SafeTensorsReadOptions.MaxNameBytes).");

    private static Dictionary<string, string> ReadWeightMap(ref Utf8JsonReader reader, string indexPath, SafeTensorsReadOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new SafeTensorsFormatException(indexPath, null, "the index has no 'weight_map' object.");
        }
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        var fileNames = new Dictionary<string, string>(StringComparer.Ordinal); // One string per distinct shard name.
        while (true)
        {
            StrictJson.Next(ref reader);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                return map;
            }
            var name = ReadKey(ref reader, indexPath, options, "tensor name");
            StrictJson.Next(ref reader);
            if (reader.TokenType != JsonTokenType.String)
            {
                throw new SafeTensorsFormatException(indexPath, name, "the weight_map value is not a file name.");
            }
            var fileName = ReadKey(ref reader, indexPath, options, "shard file name");
            if (fileName.Length == 0 || Path.IsPathRooted(fileName) || Path.GetFileName(fileName) != fileName || fileName is "." or "..")
            {
                throw new SafeTensorsFormatException(indexPath, name,
                    $"the weight_map names '{fileName}', which is not a plain file name in the index's folder.");
            }
            if (!fileNames.TryGetValue(fileName, out var shared))
            {
                fileNames.Add(fileName, shared = fileName);
            }
            if (map.ContainsKey(name))
            {
                throw new SafeTensorsFormatException(indexPath, name, "the weight_map lists the name more than once.");
            }
            if (map.Count == options.MaxTensorCount)
            {
                throw new SafeTensorsFormatException(indexPath, null,
                    $"the weight_map lists more than {options.MaxTensorCount} tensors, the limit (SafeTensorsReadOptions.MaxTensorCount).");
            }
            map.Add(name, shared);
        }
    }

    private static void ReadIndexMetadata(ref Utf8JsonReader reader, byte[] bytes, string indexPath, SafeTensorsReadOptions options,
        Dictionary<string, string> metadata)
    {
        if (reader.TokenType == JsonTokenType.Null)
        {
            return;
        }
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new SafeTensorsFormatException(indexPath, null, "the index's 'metadata' is not an object.");
        }
        while (true)
        {
            StrictJson.Next(ref reader);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                return;
            }
            var key = ReadKey(ref reader, indexPath, options, "metadata key");
            StrictJson.Next(ref reader);
            string value;
            if (reader.TokenType == JsonTokenType.String)
            {
                value = StrictJson.GetString(ref reader);
            }
            else
            {
                // Any other value is kept as its JSON text (e.g. total_size).
                var start = (int)reader.TokenStartIndex;
                StrictJson.SkipValue(ref reader);
                var end = (int)reader.TokenStartIndex + (reader.TokenType is JsonTokenType.EndObject or JsonTokenType.EndArray ? 1 : reader.ValueSpan.Length);
                value = Encoding.UTF8.GetString(bytes, start, end - start);
            }
            if (metadata.ContainsKey(key))
            {
                throw new SafeTensorsFormatException(indexPath, null, $"the index's 'metadata' has the key '{key}' more than once.");
            }
            if (metadata.Count == options.MaxMetadataEntries)
            {
                throw new SafeTensorsFormatException(indexPath, null,
                    $"the index's 'metadata' has more than {options.MaxMetadataEntries} entries, the limit (SafeTensorsReadOptions.MaxMetadataEntries).");
            }
            metadata.Add(key, value);
        }
    }

    private static Dictionary<string, (long Size, string Sha256)> ReadShards(ref Utf8JsonReader reader, string indexPath, SafeTensorsReadOptions options)
    {
        var rule = $"'{SafeTensorsWriter.ShardsKey}' must map shard file names to {{\"size\": bytes, \"sha256\": hex}}.";
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new SafeTensorsFormatException(indexPath, null, rule);
        }
        var shards = new Dictionary<string, (long, string)>(StringComparer.Ordinal);
        while (true)
        {
            StrictJson.Next(ref reader);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                return shards;
            }
            var fileName = ReadKey(ref reader, indexPath, options, "shard file name");
            if (fileName.Length == 0 || Path.GetFileName(fileName) != fileName || fileName is "." or "..")
            {
                throw new SafeTensorsFormatException(indexPath, null, $"'{SafeTensorsWriter.ShardsKey}' names '{fileName}', which is not a plain file name.");
            }
            StrictJson.Next(ref reader);
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                throw new SafeTensorsFormatException(indexPath, null, rule);
            }
            long size = -1;
            string? sha256 = null;
            while (true)
            {
                StrictJson.Next(ref reader);
                if (reader.TokenType == JsonTokenType.EndObject)
                {
                    break;
                }
                StrictJson.CheckEscapes(ref reader);
                if (reader.ValueTextEquals("size"u8) && size < 0)
                {
                    StrictJson.Next(ref reader);
                    if (StrictJson.TryGetUInt64(ref reader, out var value) is not null || value > long.MaxValue)
                    {
                        throw new SafeTensorsFormatException(indexPath, null, rule);
                    }
                    size = (long)value;
                }
                else if (reader.ValueTextEquals("sha256"u8) && sha256 is null)
                {
                    StrictJson.Next(ref reader);
                    if (reader.TokenType != JsonTokenType.String || reader.ValueSpan.Length != 64)
                    {
                        throw new SafeTensorsFormatException(indexPath, null, rule);
                    }
                    sha256 = StrictJson.GetString(ref reader);
                }
                else
                {
                    throw new SafeTensorsFormatException(indexPath, null, rule);
                }
            }
            if (size < 0 || sha256 is null || !shards.TryAdd(fileName, (size, sha256)) || shards.Count > options.MaxTensorCount)
            {
                throw new SafeTensorsFormatException(indexPath, null, rule);
            }
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
                shard = SafeTensorsFile.Open(shardPath, _options);
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
