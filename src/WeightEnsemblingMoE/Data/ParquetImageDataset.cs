using System.Text.Json;
using Parquet;
using Parquet.Schema;
using WeightEnsembling.Images;

namespace WeightEnsembling.Data;

/// <summary>
/// A Hugging Face dataset split stored as parquet files (e.g. <c>train-00000-of-00002.parquet</c>): an image column
/// holding a struct <c>{bytes, path}</c> and an integer label column. Opening reads only the labels and the row-group
/// layout; image bytes are read per row group when a batch needs them and kept in a cache bounded by
/// <see cref="CacheBytes"/>, and images are decoded and preprocessed per batch.
/// </summary>
public sealed class ParquetImageDataset : StreamingImageDataset
{
    private readonly Part[] _parts;
    private readonly long[]? _labels;
    private readonly string _imageColumn;
    private readonly object _cacheLock = new();
    private readonly LinkedList<(int Part, int Group, byte[]?[] Bytes, long Size)> _cache = new();
    private long _cached;

    private ParquetImageDataset(string name, int classCount, Part[] parts, long[]? labels, string imageColumn, long cacheBytes, ClipImageProcessor processor, DataLoaderOptions? options)
        : base(name, classCount, processor, options)
    {
        _parts = parts;
        _labels = labels;
        _imageColumn = imageColumn;
        CacheBytes = cacheBytes;
        Count = parts.Sum(p => p.Rows);
    }

    /// <inheritdoc />
    public override long Count { get; }

    /// <inheritdoc />
    public override bool HasLabels => _labels is not null;

    /// <summary>The most bytes of encoded images kept in memory between batches (whole row groups; at least one is kept).</summary>
    public long CacheBytes { get; }

    /// <summary>Opens parquet files (rows in file order) and reads their labels.</summary>
    /// <param name="files">The parquet files of one split, in order.</param>
    /// <param name="processor">The preprocessing.</param>
    /// <param name="classCount">The number of classes, or <see langword="null"/> to read it from the <c>huggingface</c> metadata of the first file (the ClassLabel names of the label column).</param>
    /// <param name="imageColumn">The image column (a struct with a binary <c>bytes</c> field). The default is <c>image</c>.</param>
    /// <param name="labelColumn">The integer label column, or <see langword="null"/> for an unlabelled split. The default is <c>label</c>.</param>
    /// <param name="options">The loader options, or <see langword="null"/> for the defaults.</param>
    /// <param name="name">The task name, or <see langword="null"/> for the first file's name.</param>
    /// <param name="cacheBytes">The bound of the encoded-image cache. The default is 256 MiB.</param>
    /// <returns>The dataset.</returns>
    /// <exception cref="InvalidDataException">A file cannot be read as parquet, lacks a column (the message names the file and the column), holds a null or out-of-range label (the message names the file and the row), or the class count is neither given nor in the metadata.</exception>
    public static ParquetImageDataset Open(
        IReadOnlyList<string> files,
        ClipImageProcessor processor,
        int? classCount = null,
        string imageColumn = "image",
        string? labelColumn = "label",
        DataLoaderOptions? options = null,
        string? name = null,
        long cacheBytes = 256L << 20)
    {
        ArgumentNullException.ThrowIfNull(files);
        ArgumentNullException.ThrowIfNull(processor);
        ArgumentException.ThrowIfNullOrWhiteSpace(imageColumn);
        ArgumentOutOfRangeException.ThrowIfLessThan(cacheBytes, 0);
        if (files.Count == 0)
        {
            throw new ArgumentException("At least one parquet file is needed.", nameof(files));
        }
        var parts = new Part[files.Count];
        var labels = labelColumn is null ? null : new List<long>();
        int? classes = classCount;
        for (int f = 0; f < files.Count; f++)
        {
            string file = files[f] ?? throw new ArgumentException($"File {f} is null.", nameof(files));
            using var handle = new ReaderHandle(OpenReader(file));
            var reader = handle.Reader;
            FindField(reader.Schema, [imageColumn, "bytes"], imageColumn, file);
            var groups = new long[reader.RowGroupCount];
            for (int g = 0; g < groups.Length; g++)
            {
                using var group = reader.OpenRowGroupReader(g);
                groups[g] = group.RowCount;
            }
            if (f == 0 && classes is null)
            {
                classes = ClassCountFromMetadata(reader, labelColumn, file);
            }
            if (labelColumn is not null)
            {
                var field = FindField(reader.Schema, [labelColumn], labelColumn, file);
                long fileRow = 0;
                for (int g = 0; g < groups.Length; g++)
                {
                    using var group = reader.OpenRowGroupReader(g);
                    foreach (long? label in ReadLabels(group, field, file))
                    {
                        if (label is null)
                        {
                            throw new InvalidDataException($"Parquet file '{file}': row {fileRow} has a null '{labelColumn}'.");
                        }
                        labels!.Add(label.Value);
                        fileRow++;
                    }
                }
            }
            parts[f] = new Part(file, groups);
        }
        if (classes is null || classes < 1)
        {
            throw new InvalidDataException($"Parquet file '{files[0]}': the class count is not given and its 'huggingface' metadata names no ClassLabel for column '{labelColumn}'; pass classCount.");
        }
        if (labels is not null)
        {
            long before = 0;
            int part = 0;
            for (int i = 0; i < labels.Count; i++)
            {
                while (i - before >= parts[part].Rows)
                {
                    before += parts[part].Rows;
                    part++;
                }
                if (labels[i] < 0 || labels[i] >= classes)
                {
                    throw new InvalidDataException($"Parquet file '{parts[part].File}': row {i - before} has label {labels[i]}, outside [0, {classes}) in column '{labelColumn}'.");
                }
            }
        }
        string taskName = name ?? Path.GetFileNameWithoutExtension(files[0]);
        return new ParquetImageDataset(taskName, classes.Value, parts, labels?.ToArray(), imageColumn, cacheBytes, processor, options);
    }

    /// <summary>Describes where an example is stored.</summary>
    /// <param name="index">The example index.</param>
    /// <returns>The file and the row within it.</returns>
    public (string File, long Row) Locate(long index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        var (part, group, offset) = Find(index);
        long row = offset;
        for (int g = 0; g < group; g++)
        {
            row += _parts[part].Groups[g];
        }
        return (_parts[part].File, row);
    }

    /// <inheritdoc />
    protected override RgbImage ReadImage(long index)
    {
        var (part, group, offset) = Find(index);
        var bytes = GroupBytes(part, group)[offset];
        var (file, row) = Locate(index);
        if (bytes is null)
        {
            throw new InvalidDataException($"Parquet file '{file}': row {row} has no image bytes in column '{_imageColumn}'.");
        }
        return Options.Decoder.Decode(bytes, $"{file}, row {row}");
    }

    /// <inheritdoc />
    protected override long LabelOf(long index) => _labels![index];

    private (int Part, int Group, int Offset) Find(long index)
    {
        foreach (var (part, p) in _parts.Select((x, i) => (x, i)))
        {
            if (index >= part.Rows)
            {
                index -= part.Rows;
                continue;
            }
            for (int g = 0; g < part.Groups.Length; g++)
            {
                if (index < part.Groups[g])
                {
                    return (p, g, (int)index);
                }
                index -= part.Groups[g];
            }
        }
        throw new ArgumentOutOfRangeException(nameof(index), index, $"Index is outside dataset '{Name}'.");
    }

    private byte[]?[] GroupBytes(int part, int group)
    {
        lock (_cacheLock)
        {
            for (var node = _cache.First; node is not null; node = node.Next)
            {
                if (node.Value.Part == part && node.Value.Group == group)
                {
                    _cache.Remove(node);
                    _cache.AddFirst(node);
                    return node.Value.Bytes;
                }
            }
            // Reading under the lock keeps one reader per file at a time; decoding, the costly part, runs outside it.
            string file = _parts[part].File;
            using var handle = new ReaderHandle(OpenReader(file));
            var field = FindField(handle.Reader.Schema, [_imageColumn, "bytes"], _imageColumn, file);
            using var rowGroup = handle.Reader.OpenRowGroupReader(group);
            var values = new byte[]?[rowGroup.RowCount];
            rowGroup.ReadAsync(field, values.AsMemory()).AsTask().GetAwaiter().GetResult();
            long size = values.Sum(v => v?.LongLength ?? 0);
            _cache.AddFirst((part, group, values, size));
            _cached += size;
            while (_cached > CacheBytes && _cache.Count > 1)
            {
                _cached -= _cache.Last!.Value.Size;
                _cache.RemoveLast();
            }
            return values;
        }
    }

    private static ParquetReader OpenReader(string file)
    {
        try
        {
            return ParquetReader.CreateAsync(file).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or NotSupportedException or InvalidOperationException or ArgumentException)
        {
            throw new InvalidDataException($"Parquet file '{file}' cannot be read: {e.Message}", e);
        }
    }

    private static DataField FindField(ParquetSchema schema, string[] path, string column, string file)
    {
        var field = schema.GetDataFields().FirstOrDefault(f => f.Path.ToList().SequenceEqual(path));
        if (field is null)
        {
            string columns = string.Join(", ", schema.GetDataFields().Select(f => string.Join('.', f.Path.ToList())));
            throw new InvalidDataException($"Parquet file '{file}' has no column '{column}' (expected '{string.Join('.', path)}'); its columns are: {columns}.");
        }
        return field;
    }

    private static IEnumerable<long?> ReadLabels(ParquetRowGroupReader group, DataField field, string file)
    {
        int n = checked((int)group.RowCount);
        long?[] result = new long?[n];
        if (field.ClrType == typeof(long))
        {
            group.ReadAsync(field, result.AsMemory()).AsTask().GetAwaiter().GetResult();
        }
        else if (field.ClrType == typeof(int))
        {
            var values = new int?[n];
            group.ReadAsync(field, values.AsMemory()).AsTask().GetAwaiter().GetResult();
            for (int i = 0; i < n; i++)
            {
                result[i] = values[i];
            }
        }
        else
        {
            throw new InvalidDataException($"Parquet file '{file}': label column '{field.Path}' holds {field.ClrType.Name}; int32 or int64 is needed.");
        }
        return result;
    }

    private static int? ClassCountFromMetadata(ParquetReader reader, string? labelColumn, string file)
    {
        if (labelColumn is null || !reader.CustomMetadata.TryGetValue("huggingface", out string? json))
        {
            return null;
        }
        try
        {
            using var document = JsonDocument.Parse(json);
            var root = document.RootElement;
            if (root.TryGetProperty("info", out var info) && info.TryGetProperty("features", out var features)
                && features.TryGetProperty(labelColumn, out var label) && label.TryGetProperty("names", out var names))
            {
                return names.GetArrayLength();
            }
            return null;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Parquet file '{file}' has invalid 'huggingface' metadata: {e.Message}", e);
        }
    }

    // ParquetReader is only IAsyncDisposable; the dataset reads synchronously (on loader threads).
    private readonly struct ReaderHandle(ParquetReader reader) : IDisposable
    {
        public ParquetReader Reader { get; } = reader;

        public void Dispose() => Reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    private sealed record Part(string File, long[] Groups)
    {
        public long Rows { get; } = Groups.Sum();
    }
}
