using System.Buffers.Text;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace WeightEnsembling.SafeTensors;

/// <summary>
/// Streaming JSON helpers over <see cref="Utf8JsonReader"/> that apply serde_json's rules where System.Text.Json is
/// laxer: a <c>\u</c> escape of a lone surrogate is an error (System.Text.Json only fails when the string is decoded, with
/// an <see cref="InvalidOperationException"/>), a number whose value overflows a double is an error, and an integer is a
/// plain run of digits (no sign, fraction or exponent). They throw <see cref="JsonException"/>; the callers turn it into
/// their own exception naming the file. Nothing here allocates per skipped token.
/// </summary>
internal static class StrictJson
{
    /// <summary>The nesting limit of serde_json (127 open containers), so that we accept what the reference accepts.</summary>
    public const int MaxDepth = 127;

    /// <summary>Reader options: no comments, no trailing commas, serde_json's depth.</summary>
    public static JsonReaderOptions ReaderOptions => new() { MaxDepth = MaxDepth };

    /// <summary>Checks that the escapes of a raw (still escaped) string token pair every surrogate.</summary>
    public static void CheckEscapes(ref Utf8JsonReader reader)
    {
        if (!reader.ValueIsEscaped)
        {
            return;
        }
        var raw = reader.ValueSpan;
        for (var i = 0; i < raw.Length; i++)
        {
            if (raw[i] != (byte)'\\')
            {
                continue;
            }
            // The reader has already checked the escape syntax: a backslash is followed by one escape character, and \u by 4 hex digits.
            if (raw[i + 1] != (byte)'u')
            {
                i++;
                continue;
            }
            var unit = Hex4(raw.Slice(i + 2, 4));
            i += 5;
            if (unit is >= 0xDC00 and <= 0xDFFF)
            {
                throw new JsonException($"a string holds the lone trailing surrogate escape \\u{unit:x4}.");
            }
            if (unit is >= 0xD800 and <= 0xDBFF)
            {
                if (i + 6 >= raw.Length || raw[i + 1] != (byte)'\\' || raw[i + 2] != (byte)'u'
                    || Hex4(raw.Slice(i + 3, 4)) is < 0xDC00 or > 0xDFFF)
                {
                    throw new JsonException($"a string holds the lone leading surrogate escape \\u{unit:x4}.");
                }
                i += 6;
            }
        }
    }

    private static int Hex4(ReadOnlySpan<byte> digits)
    {
        var value = 0;
        foreach (var d in digits)
        {
            value = value * 16 + (d <= '9' ? d - '0' : (d | 0x20) - 'a' + 10);
        }
        return value;
    }

    /// <summary>Reads the current string or property-name token, surrogates checked.</summary>
    public static string GetString(ref Utf8JsonReader reader)
    {
        CheckEscapes(ref reader);
        return reader.GetString()!;
    }

    /// <summary>The number of UTF-8 bytes the current string token decodes to, at most its raw length.</summary>
    public static int RawLength(ref Utf8JsonReader reader) => reader.ValueSpan.Length;

    /// <summary>Checks a number token the way serde_json parses it: its value must not overflow a double.</summary>
    public static void CheckNumber(ref Utf8JsonReader reader)
    {
        var raw = reader.ValueSpan;
        if (raw.Length <= 19 && raw.IndexOfAny((byte)'.', (byte)'e', (byte)'E') < 0)
        {
            return; // Fits a (u)int64: cannot overflow a double.
        }
        if (!double.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || !double.IsFinite(value))
        {
            throw new JsonException($"the number {Encoding.UTF8.GetString(raw[..Math.Min(raw.Length, 40)])} is out of range.");
        }
    }

    /// <summary>
    /// Reads the current token as an unsigned integer as serde reads a <c>usize</c>: a plain run of digits within 64 bits.
    /// Returns why not, or null.
    /// </summary>
    public static string? TryGetUInt64(ref Utf8JsonReader reader, out ulong value)
    {
        value = 0;
        if (reader.TokenType != JsonTokenType.Number)
        {
            return "is not an integer";
        }
        var raw = reader.ValueSpan;
        if (raw[0] == (byte)'-')
        {
            CheckNumber(ref reader);
            return "is negative";
        }
        if (raw.IndexOfAny((byte)'.', (byte)'e', (byte)'E') >= 0)
        {
            CheckNumber(ref reader);
            return "is not an integer";
        }
        if (!Utf8Parser.TryParse(raw, out value, out var consumed) || consumed != raw.Length)
        {
            CheckNumber(ref reader);
            return "is not an integer below 2^64";
        }
        return null;
    }

    /// <summary>
    /// Skips the value at the current token (a scalar, or a container and everything in it), checking every string and
    /// number in it as serde_json does when it buffers a value.
    /// </summary>
    public static void SkipValue(ref Utf8JsonReader reader)
    {
        if (reader.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray))
        {
            CheckScalar(ref reader);
            return;
        }
        var depth = reader.CurrentDepth;
        while (reader.Read())
        {
            if (reader.CurrentDepth == depth && reader.TokenType is JsonTokenType.EndObject or JsonTokenType.EndArray)
            {
                return;
            }
            CheckScalar(ref reader);
        }
    }

    private static void CheckScalar(ref Utf8JsonReader reader)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.String:
            case JsonTokenType.PropertyName:
                CheckEscapes(ref reader);
                break;
            case JsonTokenType.Number:
                CheckNumber(ref reader);
                break;
        }
    }

    /// <summary>Reads the next token; false at the end of the input.</summary>
    public static void Next(ref Utf8JsonReader reader)
    {
        if (!reader.Read())
        {
            throw new JsonException("the JSON text ends early.");
        }
    }

    /// <summary>Checks that nothing but whitespace follows the root value.</summary>
    public static void End(ref Utf8JsonReader reader)
    {
        if (reader.Read())
        {
            throw new JsonException("there is more than one JSON value.");
        }
    }
}
