using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.SafeTensors;

/// <summary>
/// Writes safetensors files: deterministic (tensors in ordinal name order, metadata keys sorted, the header padded with
/// spaces so that the data section starts at a multiple of 8, as the reference writer does) and atomic (each file is
/// written to a temporary file in the same folder, flushed to disk, then renamed over the target; on failure the old
/// file is left intact and the temporary file is deleted).
/// </summary>
public static partial class SafeTensorsWriter
{
    /// <summary>The file name of a single-file checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>The file name of a sharded checkpoint's index.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>
    /// Writes tensors to one safetensors file. Values are written bit for bit (NaN payloads included); tensors that are
    /// not contiguous or not on the CPU are copied to contiguous CPU memory one at a time while writing.
    /// </summary>
    /// <param name="path">The file to write (replaced atomically if it exists).</param>
    /// <param name="tensors">The tensors by name.</param>
    /// <param name="metadata">The optional <c>__metadata__</c> map; null writes none.</param>
    /// <exception cref="ArgumentException">A name is empty or reserved, a tensor is null, or a dtype has no safetensors equivalent.</exception>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var entries = Describe(tensors);
        WriteFile(Path.GetFullPath(path), entries, metadata);
    }

    /// <summary>
    /// Writes tensors as a Hugging Face checkpoint in <paramref name="folder"/>: one <c>model.safetensors</c> when all
    /// tensors fit in <paramref name="maxShardBytes"/>, otherwise shards <c>model-00001-of-0000N.safetensors</c> (filled in
    /// name order; a tensor larger than the limit gets a shard of its own) plus <c>model.safetensors.index.json</c>.
    /// The folder is replaced as a whole (<c>docs/reliability.md</c>): the files are written and flushed to disk in a hidden
    /// sibling folder that is then swapped in, so a reader or a crash sees the previous checkpoint or this one, never a
    /// mixture; the files of an earlier save (the single file, the index, shards) are gone afterwards, other files of the
    /// folder are kept. The index records each shard's size and SHA-256 (under <c>wemoe_shards</c>), which
    /// <see cref="SafeTensorsCheckpoint.Open(string, SafeTensorsReadOptions)"/> checks.
    /// </summary>
    /// <param name="folder">The folder (created if missing).</param>
    /// <param name="tensors">The tensors by name.</param>
    /// <param name="maxShardBytes">The largest data size of one shard, in bytes.</param>
    /// <param name="metadata">The optional metadata written into every shard's header.</param>
    /// <returns>The paths of the files written, the index last when there is one.</returns>
    public static IReadOnlyList<string> SaveSharded(string folder, IReadOnlyDictionary<string, Tensor> tensors, long maxShardBytes,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        var entries = Describe(tensors);
        var fullFolder = Path.GetFullPath(folder);

        var shards = new List<List<Entry>> { new() };
        long current = 0;
        foreach (var entry in entries)
        {
            if (shards[^1].Count > 0 && current + entry.ByteLength > maxShardBytes)
            {
                shards.Add(new List<Entry>());
                current = 0;
            }
            shards[^1].Add(entry);
            current += entry.ByteLength;
        }

        using var writer = AtomicFolderWriter.Begin(fullFolder, IsCheckpointFile);
        var written = new List<string>();
        if (shards.Count == 1)
        {
            WriteFile(writer.PathFor(SingleFileName), shards[0], metadata);
            writer.Commit();
            return [Path.Combine(fullFolder, SingleFileName)];
        }

        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var digests = new SortedDictionary<string, (long Size, string Sha256)>(StringComparer.Ordinal);
        for (var i = 0; i < shards.Count; i++)
        {
            var fileName = string.Create(CultureInfo.InvariantCulture, $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors");
            var digest = WriteFile(writer.PathFor(fileName), shards[i], metadata);
            digests.Add(fileName, digest);
            written.Add(Path.Combine(fullFolder, fileName));
            foreach (var entry in shards[i])
            {
                weightMap[entry.Name] = fileName;
            }
        }

        var totalSize = entries.Sum(e => e.ByteLength);
        var json = new StringBuilder();
        json.Append("{\"metadata\":{\"total_size\":").Append(totalSize.ToString(CultureInfo.InvariantCulture)).Append("},\"weight_map\":");
        SafeTensorsJson.AppendStringMap(json, weightMap).Append(",\"").Append(ShardsKey).Append("\":{");
        var firstShard = true;
        foreach (var (fileName, (size, sha256)) in digests)
        {
            json.Append(firstShard ? "" : ",");
            firstShard = false;
            SafeTensorsJson.AppendString(json, fileName).Append(":{\"size\":").Append(size.ToString(CultureInfo.InvariantCulture))
                .Append(",\"sha256\":\"").Append(sha256).Append("\"}");
        }
        json.Append("}}\n");
        var indexBytes = SafeTensorsJson.Utf8(json.ToString(), "index");
        writer.WriteFile(IndexFileName, stream => stream.Write(indexBytes));
        writer.Commit();
        written.Add(Path.Combine(fullFolder, IndexFileName));
        return written;
    }

    /// <summary>
    /// The index key (beside <c>metadata</c> and <c>weight_map</c>, ignored by other readers) under which
    /// <see cref="SaveSharded"/> records each shard's size and SHA-256, so that a reader can refuse a folder whose shards
    /// do not all belong to the index.
    /// </summary>
    internal const string ShardsKey = "wemoe_shards";

    /// <summary>Whether a file name is one of a checkpoint's files (the single file, the index or a shard): a new save supersedes them all.</summary>
    internal static bool IsCheckpointFile(string name) =>
        name is SingleFileName or IndexFileName || ShardNamePattern().IsMatch(name);

    [GeneratedRegex(@"^model-\d{5}-of-\d{5}\.safetensors$", RegexOptions.CultureInvariant)]
    private static partial Regex ShardNamePattern();

    private static List<Entry> Describe(IReadOnlyDictionary<string, Tensor> tensors)
    {
        var entries = new List<Entry>(tensors.Count);
        foreach (var (name, tensor) in tensors)
        {
            if (string.IsNullOrEmpty(name))
            {
                throw new ArgumentException("A tensor name is null or empty.", nameof(tensors));
            }
            if (name == SafeTensorsHeader.MetadataKey)
            {
                throw new ArgumentException($"'{name}' is reserved for metadata and cannot name a tensor.", nameof(tensors));
            }
            if (tensor is null)
            {
                throw new ArgumentException($"Tensor '{name}' is null.", nameof(tensors));
            }
            var dtype = SafeTensorsDTypes.FromScalarType(tensor.dtype)
                ?? throw new ArgumentException($"Tensor '{name}' has dtype {tensor.dtype}, which safetensors cannot store.", nameof(tensors));
            var shape = tensor.shape;
            entries.Add(new Entry(name, tensor, dtype, shape, tensor.NumberOfElements * SafeTensorsDTypes.Size(dtype)));
        }
        entries.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return entries;
    }

    /// <summary>Writes one file atomically; returns its size and SHA-256 (lowercase hex).</summary>
    private static (long Size, string Sha256) WriteFile(string path, List<Entry> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        var json = new StringBuilder();
        json.Append('{');
        var first = true;
        if (metadata is not null)
        {
            SafeTensorsJson.AppendString(json, SafeTensorsHeader.MetadataKey).Append(':');
            SafeTensorsJson.AppendStringMap(json, metadata);
            first = false;
        }
        long offset = 0;
        foreach (var entry in entries)
        {
            if (!first)
            {
                json.Append(',');
            }
            first = false;
            SafeTensorsJson.AppendString(json, entry.Name).Append(":{\"dtype\":");
            SafeTensorsJson.AppendString(json, entry.DType.ToString()).Append(",\"shape\":");
            SafeTensorsJson.AppendIntegers(json, entry.Shape).Append(",\"data_offsets\":");
            SafeTensorsJson.AppendIntegers(json, [offset, offset + entry.ByteLength]).Append('}');
            offset += entry.ByteLength;
        }
        json.Append('}');

        var headerText = SafeTensorsJson.Utf8(json.ToString(), "header (a tensor name or metadata)");
        var padding = (8 - headerText.Length % 8) % 8;
        var header = new byte[8 + headerText.Length + padding];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)(headerText.Length + padding));
        headerText.CopyTo(header, 8);
        header.AsSpan(8 + headerText.Length).Fill((byte)' ');

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long size = 0;
        WriteAtomically(path, stream =>
        {
            using var hashing = new HashingStream(stream, hash);
            hashing.Write(header);
            foreach (var entry in entries)
            {
                WriteTensor(hashing, entry);
            }
            size = hashing.Length;
        });
        return (size, Convert.ToHexStringLower(hash.GetHashAndReset()));
    }

    private static void WriteTensor(Stream stream, Entry entry)
    {
        using var scope = torch.NewDisposeScope();
        var data = entry.Tensor.detach();
        if (data.device_type != DeviceType.CPU)
        {
            data = data.cpu();
        }
        if (!data.is_contiguous())
        {
            data = data.contiguous();
        }
        if (data.dtype != entry.Tensor.dtype || data.NumberOfElements * data.ElementSize != entry.ByteLength)
        {
            throw new InvalidOperationException($"Tensor '{entry.Name}' changed while it was being written.");
        }
        TensorBytes.Visit(data, (span, _) => stream.Write(span));
    }

    /// <summary>
    /// Writes a file through a temporary file in the same folder (<c>.NAME.GUID.tmp</c>), flushed to disk and renamed over
    /// the target, the folder flushed after the rename; then deletes temporary files of this target that earlier saves
    /// killed part-way left behind.
    /// </summary>
    internal static void WriteAtomically(string path, Action<FileStream> write)
    {
        var folder = Path.GetDirectoryName(path)!;
        var temp = Path.Combine(folder, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
            Durability.FlushFolder(folder);
        }
        catch
        {
            try
            {
                File.Delete(temp);
            }
            catch (IOException)
            {
                // Best effort: the original exception matters more.
            }
            catch (UnauthorizedAccessException)
            {
                // Best effort: the original exception matters more.
            }
            throw;
        }

        DeleteTemporaryFiles(folder, Path.GetFileName(path));
    }

    /// <summary>Deletes the temporary files of writes of <paramref name="fileName"/> in <paramref name="folder"/> (best effort).</summary>
    internal static void DeleteTemporaryFiles(string folder, string fileName)
    {
        foreach (var leftover in Directory.EnumerateFiles(folder, $".{fileName}.*.tmp"))
        {
            var name = Path.GetFileName(leftover);
            if (name.Length == fileName.Length + 38 && AtomicFolderWriter.IsTemporaryFileName(name))
            {
                try
                {
                    File.Delete(leftover);
                }
                catch (IOException)
                {
                    // Best effort: another process may hold it; the next save tries again.
                }
                catch (UnauthorizedAccessException)
                {
                    // Same.
                }
            }
        }
    }

    private sealed record Entry(string Name, Tensor Tensor, SafeTensorsDType DType, long[] Shape, long ByteLength);
}
