using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace WeightEnsembling.SafeTensors;

/// <summary>
/// A parsed and validated safetensors header, checked by the rules of the reference implementation (the Rust
/// <c>safetensors</c> crate): size limit, UTF-8 JSON object, known dtypes, unique names, non-negative shapes, byte
/// lengths that match shape × dtype size without overflow, and tensors that tile the data section exactly.
/// </summary>
internal sealed class SafeTensorsHeader
{
    /// <summary>The largest header the reference accepts, in bytes.</summary>
    public const long MaxHeaderLength = 100_000_000;

    /// <summary>The dtypes of the reference implementation that <see cref="SafeTensorsDType"/> lacks; a file using one is refused.</summary>
    public static readonly IReadOnlySet<string> UnsupportedFormatDTypes =
        new HashSet<string>(["F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"], StringComparer.Ordinal);

    /// <summary>The key of the optional string→string metadata map.</summary>
    public const string MetadataKey = "__metadata__";

    private SafeTensorsHeader(Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata, long dataOffset, long dataLength)
    {
        Tensors = tensors;
        Metadata = metadata;
        DataOffset = dataOffset;
        DataLength = dataLength;
    }

    /// <summary>The tensors by name.</summary>
    public Dictionary<string, SafeTensorInfo> Tensors { get; }

    /// <summary>The metadata (empty when the header has none).</summary>
    public Dictionary<string, string> Metadata { get; }

    /// <summary>The file offset of the data section (8 + header length).</summary>
    public long DataOffset { get; }

    /// <summary>The length of the data section in bytes.</summary>
    public long DataLength { get; }

    /// <summary>Reads and validates the header of an open file.</summary>
    public static SafeTensorsHeader Read(Stream stream, string filePath, SafeTensorsReadOptions? options = null)
    {
        var fileLength = stream.Length;
        if (fileLength < 8)
        {
            throw new SafeTensorsFormatException(filePath, null,
                $"the file has {fileLength} bytes, fewer than the 8-byte header length prefix.");
        }

        Span<byte> prefix = stackalloc byte[8];
        stream.Position = 0;
        stream.ReadExactly(prefix);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > MaxHeaderLength)
        {
            throw new SafeTensorsFormatException(filePath, null,
                $"the header length {headerLength} exceeds the limit of {MaxHeaderLength} bytes.");
        }
        if ((long)headerLength > fileLength - 8)
        {
            throw new SafeTensorsFormatException(filePath, null,
                $"the header length {headerLength} runs past the end of the file ({fileLength} bytes; truncated file?).");
        }

        var headerBytes = new byte[headerLength];
        stream.ReadExactly(headerBytes);
        var dataOffset = 8 + (long)headerLength;
        return Parse(headerBytes, filePath, dataOffset, fileLength - dataOffset, options);
    }

    /// <summary>Parses and validates header bytes, given the length of the data section that follows them.</summary>
    /// <remarks>
    /// One streaming pass of <see cref="Utf8JsonReader"/> over the bytes: no document is built and only the names,
    /// shapes and metadata that are kept are allocated, so memory stays a small multiple of the header size
    /// (<c>docs/reliability.md</c>); every limit of <paramref name="options"/> is checked as soon as it is exceeded.
    /// </remarks>
    public static SafeTensorsHeader Parse(byte[] headerBytes, string filePath, long dataOffset, long dataLength,
        SafeTensorsReadOptions? options = null)
    {
        options ??= SafeTensorsReadOptions.Default;
        if (!Utf8.IsValid(headerBytes))
        {
            throw new SafeTensorsFormatException(filePath, null, "the header is not valid UTF-8.");
        }
        var first = headerBytes.AsSpan().IndexOfAnyExcept(" \t\r\n"u8);
        if (first < 0 || headerBytes[first] != (byte)'{')
        {
            throw new SafeTensorsFormatException(filePath, null, "the header does not start with '{' (it must be a JSON object).");
        }

        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var sawMetadata = false;
        var dims = new ulong[Math.Min(options.MaxRank, 64)];
        // Faults of an entry's values that the reference would only find when validating (a shadowed duplicate entry is
        // never validated there) are thrown after the whole header is read, so that a repeated name is reported first.
        SafeTensorsFormatException? deferred = null;
        var reader = new Utf8JsonReader(headerBytes, StrictJson.ReaderOptions);
        try
        {
            StrictJson.Next(ref reader);
            while (true)
            {
                StrictJson.Next(ref reader);
                if (reader.TokenType == JsonTokenType.EndObject)
                {
                    break;
                }
                var name = ReadName(ref reader, filePath, options, "tensor name");
                StrictJson.Next(ref reader);
                if (name == MetadataKey)
                {
                    if (sawMetadata)
                    {
                        throw new SafeTensorsFormatException(filePath, null, $"the header has the key '{MetadataKey}' more than once (duplicate field).");
                    }
                    sawMetadata = true;
                    ReadMetadata(ref reader, filePath, options, metadata);
                    continue;
                }
                if (tensors.ContainsKey(name))
                {
                    throw new SafeTensorsFormatException(filePath, name, "the name appears more than once in the header.");
                }
                if (tensors.Count == options.MaxTensorCount)
                {
                    throw new SafeTensorsFormatException(filePath, null,
                        $"the header lists more than {options.MaxTensorCount} tensors, the limit (SafeTensorsReadOptions.MaxTensorCount).");
                }
                tensors.Add(name, ReadTensor(ref reader, name, filePath, options, ref dims, ref deferred));
            }
            StrictJson.End(ref reader);
        }
        catch (JsonException ex)
        {
            throw new SafeTensorsFormatException(filePath, null, $"the header is not valid JSON: {ex.Message}", ex);
        }

        if (deferred is not null)
        {
            throw deferred;
        }
        Validate(tensors.Values, filePath, dataLength);
        return new SafeTensorsHeader(tensors, metadata, dataOffset, dataLength);
    }

    /// <summary>Reads a property name within the name length limit.</summary>
    private static string ReadName(ref Utf8JsonReader reader, string filePath, SafeTensorsReadOptions options, string what)
    {
        // An escape sequence is at most 6 bytes per byte it stands for (\u00XX): a raw token over 6 × the limit cannot fit.
        var raw = StrictJson.RawLength(ref reader);
        if (raw > options.MaxNameBytes && (!reader.ValueIsEscaped || raw > 6L * options.MaxNameBytes))
        {
            throw NameTooLong(filePath, options, what);
        }
        var name = StrictJson.GetString(ref reader);
        if (reader.ValueIsEscaped && Encoding.UTF8.GetByteCount(name) > options.MaxNameBytes)
        {
            throw NameTooLong(filePath, options, what);
        }
        return name;
    }

    private static SafeTensorsFormatException NameTooLong(string filePath, SafeTensorsReadOptions options, string what) =>
        new(filePath, null, $"a {what} is longer than {options.MaxNameBytes} UTF-8 bytes, the limit (SafeTensorsReadOptions.MaxNameBytes).");

    private static void ReadMetadata(ref Utf8JsonReader reader, string filePath, SafeTensorsReadOptions options, Dictionary<string, string> metadata)
    {
        if (reader.TokenType == JsonTokenType.Null)
        {
            return;
        }
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new SafeTensorsFormatException(filePath, null, $"'{MetadataKey}' must be an object mapping strings to strings.");
        }
        while (true)
        {
            StrictJson.Next(ref reader);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                return;
            }
            var key = ReadName(ref reader, filePath, options, "metadata key");
            StrictJson.Next(ref reader);
            if (reader.TokenType != JsonTokenType.String)
            {
                throw new SafeTensorsFormatException(filePath, null,
                    $"'{MetadataKey}' entry '{key}' is not a string (metadata maps strings to strings).");
            }
            var value = StrictJson.GetString(ref reader);
            if (metadata.ContainsKey(key))
            {
                throw new SafeTensorsFormatException(filePath, null, $"'{MetadataKey}' has the key '{key}' more than once.");
            }
            if (metadata.Count == options.MaxMetadataEntries)
            {
                throw new SafeTensorsFormatException(filePath, null,
                    $"'{MetadataKey}' has more than {options.MaxMetadataEntries} entries, the limit (SafeTensorsReadOptions.MaxMetadataEntries).");
            }
            metadata.Add(key, value);
        }
    }

    private static SafeTensorInfo ReadTensor(ref Utf8JsonReader reader, string name, string filePath, SafeTensorsReadOptions options, ref ulong[] dims,
        ref SafeTensorsFormatException? deferred)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new SafeTensorsFormatException(filePath, name, "the header entry is not an object with dtype, shape and data_offsets.");
        }
        SafeTensorsDType? dtype = null;
        long[]? shape = null;
        var rank = -1;
        long begin = -1, end = -1;
        while (true)
        {
            StrictJson.Next(ref reader);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                break;
            }
            StrictJson.CheckEscapes(ref reader);
            if (reader.ValueTextEquals("dtype"u8))
            {
                StrictJson.Next(ref reader);
                if (dtype is not null)
                {
                    throw Duplicate(filePath, name, "dtype");
                }
                dtype = ReadDType(ref reader, name, filePath);
            }
            else if (reader.ValueTextEquals("shape"u8))
            {
                StrictJson.Next(ref reader);
                if (rank >= 0)
                {
                    throw Duplicate(filePath, name, "shape");
                }
                rank = ReadShape(ref reader, name, filePath, options, ref dims);
            }
            else if (reader.ValueTextEquals("data_offsets"u8))
            {
                StrictJson.Next(ref reader);
                if (begin >= 0)
                {
                    throw Duplicate(filePath, name, "data_offsets");
                }
                (begin, end) = ReadOffsets(ref reader, name, filePath, ref deferred);
            }
            else
            {
                // serde ignores unknown fields, after buffering (and so checking) them.
                StrictJson.Next(ref reader);
                StrictJson.SkipValue(ref reader);
            }
        }
        if (dtype is null)
        {
            throw new SafeTensorsFormatException(filePath, name, "the entry has no string 'dtype'.");
        }
        if (rank < 0)
        {
            throw new SafeTensorsFormatException(filePath, name, "the entry has no array 'shape'.");
        }
        if (begin < 0)
        {
            throw new SafeTensorsFormatException(filePath, name, "the entry has no 'data_offsets' array of two integers [begin, end).");
        }
        shape = ToShape(dims.AsSpan(0, rank), dtype.Value, name, filePath, ref deferred);
        return new SafeTensorInfo(name, dtype.Value, shape, begin, end);
    }

    private static SafeTensorsFormatException Duplicate(string filePath, string name, string field) =>
        new(filePath, name, $"the entry has the field '{field}' more than once (duplicate field).");

    private static SafeTensorsDType ReadDType(ref Utf8JsonReader reader, string name, string filePath)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            throw new SafeTensorsFormatException(filePath, name, "the entry has no string 'dtype'.");
        }
        var text = StrictJson.GetString(ref reader);
        if (!SafeTensorsDTypes.TryParse(text, out var dtype))
        {
            var shown = text.Length > 40 ? text[..40] + "…" : text;
            throw new SafeTensorsFormatException(filePath, name, UnsupportedFormatDTypes.Contains(text)
                ? $"'{shown}' is a dtype of the format that this library does not support (no TorchSharp equivalent)."
                : $"'{shown}' is not a valid dtype.");
        }
        return dtype;
    }

    private static int ReadShape(ref Utf8JsonReader reader, string name, string filePath, SafeTensorsReadOptions options, ref ulong[] dims)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new SafeTensorsFormatException(filePath, name, "the entry has no array 'shape'.");
        }
        var rank = 0;
        while (true)
        {
            StrictJson.Next(ref reader);
            if (reader.TokenType == JsonTokenType.EndArray)
            {
                return rank;
            }
            if (rank == options.MaxRank)
            {
                throw new SafeTensorsFormatException(filePath, name,
                    $"the shape has more than {options.MaxRank} dimensions, the limit (SafeTensorsReadOptions.MaxRank).");
            }
            var why = StrictJson.TryGetUInt64(ref reader, out var size);
            if (why is not null)
            {
                throw new SafeTensorsFormatException(filePath, name, $"shape entry {rank} {why}.");
            }
            if (rank == dims.Length)
            {
                Array.Resize(ref dims, Math.Min(options.MaxRank, dims.Length * 2));
            }
            dims[rank++] = size;
        }
    }

    /// <summary>
    /// The reference's overflow rule (element count × bit size, multiplied left to right in 64 unsigned bits), then the
    /// rule of libtorch, which must hold every shape we load: every dimension fits a signed 64-bit integer, and so do the
    /// contiguous strides (the product of the dimensions after the first, a zero counted as one). The reference accepts
    /// an empty tensor such as [0, 2^62, 4]; libtorch cannot create it ("Stride calculation overflowed"), so we refuse it
    /// when the file is opened rather than when the tensor is loaded.
    /// </summary>
    private static long[] ToShape(ReadOnlySpan<ulong> dims, SafeTensorsDType dtype, string name, string filePath,
        ref SafeTensorsFormatException? deferred)
    {
        ulong elements = 1;
        var overflow = false;
        foreach (var d in dims)
        {
            overflow |= Math.BigMul(elements, d, out elements) != 0;
        }
        overflow |= Math.BigMul(elements, (ulong)SafeTensorsDTypes.Size(dtype) * 8, out _) != 0;
        if (overflow)
        {
            deferred ??= new SafeTensorsFormatException(filePath, name, $"the byte length of shape [{Describe(dims)}] × {dtype} overflows.");
            return [];
        }
        ulong stride = 1;
        for (var i = dims.Length - 1; i >= 1; i--)
        {
            if (Math.BigMul(stride, Math.Max(dims[i], 1UL), out stride) != 0 || stride > long.MaxValue)
            {
                deferred ??= Unrepresentable(filePath, name, dims);
                return [];
            }
        }
        var shape = dims.IsEmpty ? [] : new long[dims.Length];
        for (var i = 0; i < dims.Length; i++)
        {
            if (dims[i] > long.MaxValue)
            {
                deferred ??= Unrepresentable(filePath, name, dims);
                return [];
            }
            shape[i] = (long)dims[i];
        }
        return shape;
    }

    private static SafeTensorsFormatException Unrepresentable(string filePath, string name, ReadOnlySpan<ulong> dims) =>
        new(filePath, name, $"libtorch cannot represent shape [{Describe(dims)}]: a dimension or a contiguous stride exceeds 2^63 − 1 " +
            "(the format allows such an empty tensor; we refuse it on purpose, see docs/reliability.md).");

    private static string Describe(ReadOnlySpan<ulong> dims)
    {
        var text = new StringBuilder();
        for (var i = 0; i < dims.Length; i++)
        {
            text.Append(i == 0 ? "" : ", ").Append(dims[i].ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        return text.ToString();
    }

    private static (long Begin, long End) ReadOffsets(ref Utf8JsonReader reader, string name, string filePath, ref SafeTensorsFormatException? deferred)
    {
        const string Rule = "the entry has no 'data_offsets' array of two integers [begin, end).";
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new SafeTensorsFormatException(filePath, name, Rule);
        }
        Span<long> values = stackalloc long[2];
        for (var i = 0; i < 2; i++)
        {
            StrictJson.Next(ref reader);
            if (reader.TokenType == JsonTokenType.EndArray)
            {
                throw new SafeTensorsFormatException(filePath, name, Rule);
            }
            var which = i == 0 ? "begin" : "end";
            var why = StrictJson.TryGetUInt64(ref reader, out var value);
            if (why is not null)
            {
                throw new SafeTensorsFormatException(filePath, name, $"the {which} data offset {why}.");
            }
            if (value > long.MaxValue)
            {
                deferred ??= new SafeTensorsFormatException(filePath, name, $"the {which} data offset {value} is past any file's end.");
                value = 0;
            }
            values[i] = (long)value;
        }
        StrictJson.Next(ref reader);
        if (reader.TokenType != JsonTokenType.EndArray)
        {
            throw new SafeTensorsFormatException(filePath, name, Rule);
        }
        return (values[0], values[1]);
    }

    private static void Validate(IEnumerable<SafeTensorInfo> tensors, string filePath, long dataLength)
    {
        var ordered = tensors.ToArray();
        Array.Sort(ordered, static (a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin)
            : a.End != b.End ? a.End.CompareTo(b.End) : string.CompareOrdinal(a.Name, b.Name));
        long expectedBegin = 0;
        foreach (var info in ordered)
        {
            if (info.End < info.Begin)
            {
                throw new SafeTensorsFormatException(filePath, info.Name,
                    $"data_offsets [{info.Begin}, {info.End}) end before they begin.");
            }
            if (info.End > dataLength)
            {
                throw new SafeTensorsFormatException(filePath, info.Name,
                    $"data_offsets [{info.Begin}, {info.End}) run past the end of the data section ({dataLength} bytes; truncated file?).");
            }
            if (info.Begin < expectedBegin)
            {
                throw new SafeTensorsFormatException(filePath, info.Name,
                    $"data_offsets [{info.Begin}, {info.End}) overlap the previous tensor, which ends at {expectedBegin}.");
            }
            if (info.Begin > expectedBegin)
            {
                throw new SafeTensorsFormatException(filePath, info.Name,
                    $"data_offsets [{info.Begin}, {info.End}) leave a gap: the tensor must begin at {expectedBegin}.");
            }

            // Parse already applied the reference's overflow rule (64-bit unsigned, left to right): this cannot overflow.
            ulong elements = 1;
            foreach (var dimension in info.Shape)
            {
                elements *= (ulong)dimension;
            }
            var byteLength = (long)(elements * (ulong)SafeTensorsDTypes.Size(info.DType));
            if (byteLength != info.End - info.Begin)
            {
                throw new SafeTensorsFormatException(filePath, info.Name,
                    $"data_offsets [{info.Begin}, {info.End}) hold {info.End - info.Begin} bytes, but shape " +
                    $"[{string.Join(", ", info.Shape)}] × {info.DType} needs {byteLength}.");
            }
            expectedBegin = info.End;
        }

        if (expectedBegin != dataLength)
        {
            throw new SafeTensorsFormatException(filePath, null,
                $"the tensors cover {expectedBegin} bytes, but the data section has {dataLength} (every byte must belong to a tensor).");
        }
    }
}
