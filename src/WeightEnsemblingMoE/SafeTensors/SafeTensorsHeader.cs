using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

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

    /// <summary>The key of the optional string→string metadata map.</summary>
    public const string MetadataKey = "__metadata__";

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

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
    public static SafeTensorsHeader Read(Stream stream, string filePath)
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
        return Parse(headerBytes, filePath, dataOffset, fileLength - dataOffset);
    }

    /// <summary>Parses and validates header bytes, given the length of the data section that follows them.</summary>
    public static SafeTensorsHeader Parse(byte[] headerBytes, string filePath, long dataOffset, long dataLength)
    {
        string text;
        try
        {
            text = StrictUtf8.GetString(headerBytes);
        }
        catch (DecoderFallbackException ex)
        {
            throw new SafeTensorsFormatException(filePath, null, "the header is not valid UTF-8.", ex);
        }
        if (!text.StartsWith('{'))
        {
            throw new SafeTensorsFormatException(filePath, null, "the header does not start with '{' (it must be a JSON object).");
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes);
        }
        catch (JsonException ex)
        {
            throw new SafeTensorsFormatException(filePath, null, $"the header is not valid JSON: {ex.Message}", ex);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new SafeTensorsFormatException(filePath, null, "the header is not a JSON object.");
            }

            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                {
                    throw new SafeTensorsFormatException(filePath, property.Name, "the name appears more than once in the header.");
                }
                if (property.Name == MetadataKey)
                {
                    ReadMetadata(property.Value, filePath, metadata);
                }
                else
                {
                    tensors.Add(property.Name, ReadTensor(property.Name, property.Value, filePath));
                }
            }

            Validate(tensors.Values, filePath, dataLength);
            return new SafeTensorsHeader(tensors, metadata, dataOffset, dataLength);
        }
    }

    private static void ReadMetadata(JsonElement value, string filePath, Dictionary<string, string> metadata)
    {
        if (value.ValueKind == JsonValueKind.Null)
        {
            return;
        }
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw new SafeTensorsFormatException(filePath, null, $"'{MetadataKey}' must be an object mapping strings to strings.");
        }
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
            {
                throw new SafeTensorsFormatException(filePath, null,
                    $"'{MetadataKey}' entry '{entry.Name}' is not a string (metadata maps strings to strings).");
            }
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
            {
                throw new SafeTensorsFormatException(filePath, null, $"'{MetadataKey}' has the key '{entry.Name}' more than once.");
            }
        }
    }

    private static SafeTensorInfo ReadTensor(string name, JsonElement value, string filePath)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw new SafeTensorsFormatException(filePath, name, "the header entry is not an object with dtype, shape and data_offsets.");
        }

        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            throw new SafeTensorsFormatException(filePath, name, "the entry has no string 'dtype'.");
        }
        var dtypeText = dtypeElement.GetString()!;
        if (!SafeTensorsDTypes.TryParse(dtypeText, out var dtype))
        {
            throw new SafeTensorsFormatException(filePath, name, $"'{dtypeText}' is not a valid dtype.");
        }

        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
        {
            throw new SafeTensorsFormatException(filePath, name, "the entry has no array 'shape'.");
        }
        var shape = new long[shapeElement.GetArrayLength()];
        var i = 0;
        foreach (var dimension in shapeElement.EnumerateArray())
        {
            if (dimension.ValueKind != JsonValueKind.Number || !dimension.TryGetInt64(out var size))
            {
                throw new SafeTensorsFormatException(filePath, name, $"shape entry {i} is not an integer.");
            }
            if (size < 0)
            {
                throw new SafeTensorsFormatException(filePath, name, $"shape entry {i} is negative ({size}).");
            }
            shape[i++] = size;
        }

        if (!value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
        {
            throw new SafeTensorsFormatException(filePath, name, "the entry has no 'data_offsets' array of two integers [begin, end).");
        }
        var begin = ReadOffset(offsetsElement[0], name, filePath, "begin");
        var end = ReadOffset(offsetsElement[1], name, filePath, "end");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    private static long ReadOffset(JsonElement element, string name, string filePath, string which)
    {
        if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out var offset))
        {
            throw new SafeTensorsFormatException(filePath, name, $"the {which} data offset is not an integer in range.");
        }
        if (offset < 0)
        {
            throw new SafeTensorsFormatException(filePath, name, $"the {which} data offset is negative ({offset}).");
        }
        return offset;
    }

    private static void Validate(IEnumerable<SafeTensorInfo> tensors, string filePath, long dataLength)
    {
        var ordered = tensors
            .OrderBy(t => t.Begin)
            .ThenBy(t => t.End)
            .ThenBy(t => t.Name, StringComparer.Ordinal);
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

            long byteLength;
            try
            {
                long elements = 1;
                foreach (var dimension in info.Shape)
                {
                    elements = checked(elements * dimension);
                }
                byteLength = checked(elements * SafeTensorsDTypes.Size(info.DType));
            }
            catch (OverflowException ex)
            {
                throw new SafeTensorsFormatException(filePath, info.Name,
                    $"the byte length of shape [{string.Join(", ", info.Shape)}] × {info.DType} overflows.", ex);
            }
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
