using System.Globalization;
using System.Text;

namespace WeightEnsembling.Tests.SafeTensors.Fuzz;

/// <summary>
/// An independent model of what the reference implementation (huggingface/safetensors, <c>safetensors/src/tensor.rs</c>,
/// <c>SafeTensors::read_metadata</c>, with serde_json and serde's derive) accepts. It shares no code with the library: its
/// own UTF-8 check and JSON parser written to serde_json's rules (strict grammar, 127 nested containers, lone surrogate
/// escapes refused, a number overflowing f64 refused, integers as u64 / i64 / f64 like serde_json), then serde's data
/// model: <c>__metadata__</c> a known field (twice is "duplicate field"), tensors a flattened map (a name twice: the last
/// wins), <c>TensorInfo</c> a struct (a known field twice is "duplicate field", unknown fields ignored, a sequence of
/// three is accepted too), dtype an enum of the reference's 22 names, shape <c>Vec&lt;usize&gt;</c>, data_offsets a
/// pair; then <c>Metadata::validate</c> (sorted by offsets, contiguous from 0, checked u64 products of shape × bit size,
/// whole bytes) and the data section ending the file. Checked against the reference crate itself on the fuzz corpus
/// (docs/reliability.md).
/// </summary>
internal static class ReferenceOracle
{
    public const ulong MaxHeaderSize = 100_000_000;

    public static readonly IReadOnlyDictionary<string, int> BitSizes = new Dictionary<string, int>(StringComparer.Ordinal)
    {
        ["BOOL"] = 8, ["F4"] = 4, ["F6_E2M3"] = 6, ["F6_E3M2"] = 6, ["U8"] = 8, ["I8"] = 8, ["F8_E5M2"] = 8, ["F8_E4M3"] = 8,
        ["F8_E8M0"] = 8, ["F8_E4M3FNUZ"] = 8, ["F8_E5M2FNUZ"] = 8, ["I16"] = 16, ["U16"] = 16, ["F16"] = 16, ["BF16"] = 16,
        ["I32"] = 32, ["U32"] = 32, ["F32"] = 32, ["C64"] = 64, ["F64"] = 64, ["I64"] = 64, ["U64"] = 64,
    };

    public sealed record Tensor(string DType, ulong[] Shape, ulong Begin, ulong End);

    public sealed record Verdict(bool Accepted, string Reason, IReadOnlyDictionary<string, Tensor>? Tensors, IReadOnlyDictionary<string, string>? Metadata);

    private sealed class Reject(string reason) : Exception(reason);

    public static Verdict Check(byte[] file)
    {
        try
        {
            var (tensors, metadata) = Read(file);
            return new Verdict(true, "", tensors, metadata);
        }
        catch (Reject r)
        {
            return new Verdict(false, r.Message, null, null);
        }
    }

    private static (Dictionary<string, Tensor>, Dictionary<string, string>?) Read(byte[] file)
    {
        if (file.Length < 8)
        {
            throw new Reject("HeaderTooSmall");
        }
        var n = BitConverter.ToUInt64(file, 0);
        if (n > MaxHeaderSize)
        {
            throw new Reject("HeaderTooLarge");
        }
        if (8 + n > (ulong)file.Length)
        {
            throw new Reject("InvalidHeaderLength");
        }
        var header = file.AsSpan(8, (int)n).ToArray();
        if (!IsUtf8(header))
        {
            throw new Reject("InvalidHeader (UTF-8)");
        }
        var root = new Parser(header).ParseDocument();
        if (root is not List<KeyValuePair<string, object?>> members)
        {
            throw new Reject("invalid type: expected map");
        }
        Dictionary<string, string>? metadata = null;
        var sawMetadata = false;
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (key, value) in members)
        {
            if (key == "__metadata__")
            {
                if (sawMetadata)
                {
                    throw new Reject("duplicate field `__metadata__`");
                }
                sawMetadata = true;
                if (value is null)
                {
                    continue;
                }
                if (value is not List<KeyValuePair<string, object?>> map)
                {
                    throw new Reject("metadata: invalid type");
                }
                metadata = new Dictionary<string, string>(StringComparer.Ordinal);
                foreach (var (k, v) in map)
                {
                    metadata[k] = v as string ?? throw new Reject("metadata value: invalid type");
                }
                continue;
            }
            tensors[key] = ToTensor(value);
        }

        var ordered = tensors.Values.OrderBy(t => t.Begin).ThenBy(t => t.End).ToList();
        ulong start = 0;
        foreach (var info in ordered)
        {
            if (info.Begin != start || info.End < info.Begin)
            {
                throw new Reject("InvalidOffset");
            }
            start = info.End;
            ulong elements = 1;
            foreach (var d in info.Shape)
            {
                if (Math.BigMul(elements, d, out elements) != 0)
                {
                    throw new Reject("ValidationOverflow");
                }
            }
            if (Math.BigMul(elements, (ulong)BitSizes[info.DType], out var bits) != 0)
            {
                throw new Reject("ValidationOverflow");
            }
            if (bits % 8 != 0)
            {
                throw new Reject("MisalignedSlice");
            }
            if (info.End - info.Begin != bits / 8)
            {
                throw new Reject("TensorInvalidInfo");
            }
        }
        if (start + 8 + n != (ulong)file.Length)
        {
            throw new Reject("MetadataIncompleteBuffer");
        }
        return (tensors, metadata);
    }

    private static Tensor ToTensor(object? value)
    {
        object? dtype = null, shape = null, offsets = null;
        bool hasDType = false, hasShape = false, hasOffsets = false;
        if (value is List<KeyValuePair<string, object?>> fields)
        {
            foreach (var (k, v) in fields)
            {
                switch (k)
                {
                    case "dtype":
                        if (hasDType) throw new Reject("duplicate field `dtype`");
                        hasDType = true; dtype = v; break;
                    case "shape":
                        if (hasShape) throw new Reject("duplicate field `shape`");
                        hasShape = true; shape = v; break;
                    case "data_offsets":
                        if (hasOffsets) throw new Reject("duplicate field `data_offsets`");
                        hasOffsets = true; offsets = v; break;
                }
            }
            if (!hasDType || !hasShape || !hasOffsets)
            {
                throw new Reject("missing field");
            }
        }
        else if (value is List<object?> sequence)
        {
            if (sequence.Count != 3)
            {
                throw new Reject("invalid length");
            }
            (dtype, shape, offsets) = (sequence[0], sequence[1], sequence[2]);
        }
        else
        {
            throw new Reject("TensorInfo: invalid type");
        }

        string name = dtype switch
        {
            string s when BitSizes.ContainsKey(s) => s,
            List<KeyValuePair<string, object?>> { Count: 1 } m when BitSizes.ContainsKey(m[0].Key) && m[0].Value is null => m[0].Key,
            _ => throw new Reject("dtype: unknown variant or invalid type"),
        };
        if (shape is not List<object?> dims || dims.Any(d => d is not ulong))
        {
            throw new Reject("shape: invalid type");
        }
        if (offsets is not List<object?> { Count: 2 } pair || pair[0] is not ulong begin || pair[1] is not ulong end)
        {
            throw new Reject("data_offsets: invalid type or length");
        }
        return new Tensor(name, dims.Cast<ulong>().ToArray(), begin, end);
    }

    /// <summary>RFC 3629 UTF-8, as Rust's <c>str::from_utf8</c>: no overlong forms, no surrogates, nothing above U+10FFFF.</summary>
    private static bool IsUtf8(byte[] bytes)
    {
        for (var i = 0; i < bytes.Length;)
        {
            var b = bytes[i];
            int need; int min;
            if (b < 0x80) { i++; continue; }
            else if (b is >= 0xC2 and <= 0xDF) { need = 1; min = 0x80; }
            else if (b is >= 0xE0 and <= 0xEF) { need = 2; min = 0x800; }
            else if (b is >= 0xF0 and <= 0xF4) { need = 3; min = 0x10000; }
            else return false;
            if (i + need >= bytes.Length) return false;
            var cp = b & (0x3F >> need);
            for (var k = 1; k <= need; k++)
            {
                var c = bytes[i + k];
                if ((c & 0xC0) != 0x80) return false;
                cp = (cp << 6) | (c & 0x3F);
            }
            if (cp < min || cp > 0x10FFFF || cp is >= 0xD800 and <= 0xDFFF) return false;
            i += need + 1;
        }
        return true;
    }

    /// <summary>serde_json's grammar and value model: objects as ordered pairs, numbers as ulong / long / double.</summary>
    private sealed class Parser(byte[] text)
    {
        private int _pos;
        private int _remainingDepth = 128;

        public object? ParseDocument()
        {
            SkipWhitespace();
            var value = ParseValue();
            SkipWhitespace();
            if (_pos != text.Length)
            {
                throw new Reject("trailing characters");
            }
            return value;
        }

        private void SkipWhitespace()
        {
            while (_pos < text.Length && text[_pos] is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r')
            {
                _pos++;
            }
        }

        private byte Peek() => _pos < text.Length ? text[_pos] : throw new Reject("EOF while parsing");

        private object? ParseValue()
        {
            switch (Peek())
            {
                case (byte)'{':
                    Enter();
                    _pos++;
                    var members = new List<KeyValuePair<string, object?>>();
                    SkipWhitespace();
                    if (Peek() == '}')
                    {
                        _pos++;
                        _remainingDepth++;
                        return members;
                    }
                    while (true)
                    {
                        SkipWhitespace();
                        if (Peek() != '"')
                        {
                            throw new Reject("key must be a string");
                        }
                        var key = ParseString();
                        SkipWhitespace();
                        Expect((byte)':');
                        SkipWhitespace();
                        members.Add(new(key, ParseValue()));
                        SkipWhitespace();
                        var c = Peek();
                        _pos++;
                        if (c == '}')
                        {
                            _remainingDepth++;
                            return members;
                        }
                        if (c != ',')
                        {
                            throw new Reject("expected , or }");
                        }
                    }
                case (byte)'[':
                    Enter();
                    _pos++;
                    var items = new List<object?>();
                    SkipWhitespace();
                    if (Peek() == ']')
                    {
                        _pos++;
                        _remainingDepth++;
                        return items;
                    }
                    while (true)
                    {
                        SkipWhitespace();
                        items.Add(ParseValue());
                        SkipWhitespace();
                        var c = Peek();
                        _pos++;
                        if (c == ']')
                        {
                            _remainingDepth++;
                            return items;
                        }
                        if (c != ',')
                        {
                            throw new Reject("expected , or ]");
                        }
                    }
                case (byte)'"':
                    return ParseString();
                case (byte)'t':
                    Literal("true");
                    return true;
                case (byte)'f':
                    Literal("false");
                    return false;
                case (byte)'n':
                    Literal("null");
                    return null;
                default:
                    return ParseNumber();
            }
        }

        private void Enter()
        {
            if (--_remainingDepth == 0)
            {
                throw new Reject("recursion limit exceeded");
            }
        }

        private void Expect(byte c)
        {
            if (Peek() != c)
            {
                throw new Reject($"expected '{(char)c}'");
            }
            _pos++;
        }

        private void Literal(string word)
        {
            foreach (var c in word)
            {
                Expect((byte)c);
            }
        }

        private object ParseNumber()
        {
            var start = _pos;
            var negative = Peek() == '-';
            if (negative)
            {
                _pos++;
            }
            if (Peek() == '0')
            {
                _pos++;
                if (_pos < text.Length && text[_pos] is >= (byte)'0' and <= (byte)'9')
                {
                    throw new Reject("invalid number");
                }
            }
            else if (Peek() is >= (byte)'1' and <= (byte)'9')
            {
                while (_pos < text.Length && text[_pos] is >= (byte)'0' and <= (byte)'9') _pos++;
            }
            else
            {
                throw new Reject("expected value");
            }
            var isFloat = false;
            if (_pos < text.Length && text[_pos] == '.')
            {
                isFloat = true;
                _pos++;
                if (_pos >= text.Length || text[_pos] is < (byte)'0' or > (byte)'9') throw new Reject("invalid number");
                while (_pos < text.Length && text[_pos] is >= (byte)'0' and <= (byte)'9') _pos++;
            }
            if (_pos < text.Length && text[_pos] is (byte)'e' or (byte)'E')
            {
                isFloat = true;
                _pos++;
                if (_pos < text.Length && text[_pos] is (byte)'+' or (byte)'-') _pos++;
                if (_pos >= text.Length || text[_pos] is < (byte)'0' or > (byte)'9') throw new Reject("invalid number");
                while (_pos < text.Length && text[_pos] is >= (byte)'0' and <= (byte)'9') _pos++;
            }
            var literal = Encoding.ASCII.GetString(text, start, _pos - start);
            if (!isFloat)
            {
                if (!negative && ulong.TryParse(literal, NumberStyles.None, CultureInfo.InvariantCulture, out var u))
                {
                    return u;
                }
                if (negative && long.TryParse(literal, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l) && l != 0)
                {
                    return l;
                }
            }
            var d = double.Parse(literal, NumberStyles.Float, CultureInfo.InvariantCulture);
            if (double.IsInfinity(d))
            {
                throw new Reject("number out of range");
            }
            return d;
        }

        private string ParseString()
        {
            Expect((byte)'"');
            var bytes = new List<byte>();
            var builder = new StringBuilder();
            void FlushBytes()
            {
                builder.Append(Encoding.UTF8.GetString(bytes.ToArray()));
                bytes.Clear();
            }
            while (true)
            {
                var c = Peek();
                _pos++;
                if (c == '"')
                {
                    FlushBytes();
                    return builder.ToString();
                }
                if (c < 0x20)
                {
                    throw new Reject("control character in string");
                }
                if (c != '\\')
                {
                    bytes.Add(c);
                    continue;
                }
                FlushBytes();
                var e = Peek();
                _pos++;
                switch (e)
                {
                    case (byte)'"': builder.Append('"'); break;
                    case (byte)'\\': builder.Append('\\'); break;
                    case (byte)'/': builder.Append('/'); break;
                    case (byte)'b': builder.Append('\b'); break;
                    case (byte)'f': builder.Append('\f'); break;
                    case (byte)'n': builder.Append('\n'); break;
                    case (byte)'r': builder.Append('\r'); break;
                    case (byte)'t': builder.Append('\t'); break;
                    case (byte)'u':
                        var unit = Hex4();
                        if (unit is >= 0xDC00 and <= 0xDFFF)
                        {
                            throw new Reject("lone trailing surrogate");
                        }
                        if (unit is >= 0xD800 and <= 0xDBFF)
                        {
                            if (_pos + 1 >= text.Length || text[_pos] != '\\' || text[_pos + 1] != 'u')
                            {
                                throw new Reject("unexpected end of hex escape / lone leading surrogate");
                            }
                            _pos += 2;
                            var low = Hex4();
                            if (low is < 0xDC00 or > 0xDFFF)
                            {
                                throw new Reject("lone leading surrogate");
                            }
                            builder.Append((char)unit).Append((char)low);
                        }
                        else
                        {
                            builder.Append((char)unit);
                        }
                        break;
                    default:
                        throw new Reject("invalid escape");
                }
            }
        }

        private int Hex4()
        {
            var value = 0;
            for (var k = 0; k < 4; k++)
            {
                var c = Peek();
                _pos++;
                int digit = c switch
                {
                    >= (byte)'0' and <= (byte)'9' => c - '0',
                    >= (byte)'a' and <= (byte)'f' => c - 'a' + 10,
                    >= (byte)'A' and <= (byte)'F' => c - 'A' + 10,
                    _ => throw new Reject("invalid escape"),
                };
                value = value * 16 + digit;
            }
            return value;
        }
    }
}
