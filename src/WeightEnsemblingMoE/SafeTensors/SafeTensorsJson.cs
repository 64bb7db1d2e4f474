using System.Globalization;
using System.Text;

namespace WeightEnsembling.SafeTensors;

/// <summary>
/// Compact JSON text as the reference writer (serde_json) produces it: no whitespace, non-ASCII written as UTF-8,
/// only quote, backslash and control characters escaped.
/// </summary>
internal static class SafeTensorsJson
{
    /// <summary>Appends a JSON string literal.</summary>
    public static StringBuilder AppendString(StringBuilder builder, string value)
    {
        builder.Append('"');
        foreach (var c in value)
        {
            switch (c)
            {
                case '"': builder.Append("\\\""); break;
                case '\\': builder.Append("\\\\"); break;
                case '\b': builder.Append("\\b"); break;
                case '\f': builder.Append("\\f"); break;
                case '\n': builder.Append("\\n"); break;
                case '\r': builder.Append("\\r"); break;
                case '\t': builder.Append("\\t"); break;
                default:
                    if (c < 0x20)
                    {
                        builder.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        builder.Append(c);
                    }
                    break;
            }
        }
        return builder.Append('"');
    }

    /// <summary>Appends a JSON object of strings, keys in ordinal order.</summary>
    public static StringBuilder AppendStringMap(StringBuilder builder, IEnumerable<KeyValuePair<string, string>> map)
    {
        builder.Append('{');
        var first = true;
        foreach (var (key, value) in map.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            if (!first)
            {
                builder.Append(',');
            }
            first = false;
            AppendString(builder, key).Append(':');
            AppendString(builder, value);
        }
        return builder.Append('}');
    }

    /// <summary>Appends a JSON array of integers.</summary>
    public static StringBuilder AppendIntegers(StringBuilder builder, IEnumerable<long> values)
    {
        builder.Append('[');
        builder.AppendJoin(',', values.Select(v => v.ToString(CultureInfo.InvariantCulture)));
        return builder.Append(']');
    }

    /// <summary>Encodes text as UTF-8, rejecting lone surrogates.</summary>
    public static byte[] Utf8(string text, string what)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetBytes(text);
        }
        catch (EncoderFallbackException ex)
        {
            throw new ArgumentException($"The {what} contains text that is not valid Unicode (a lone surrogate).", ex);
        }
    }
}
