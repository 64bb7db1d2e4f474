using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace WeightEnsembling.Clip;

/// <summary>Reading and checking the values of Hugging Face CLIP <c>config.json</c> files (shared by the CLIP configs).</summary>
internal static class ClipConfigJson
{
    // A config.json is a few kilobytes; anything this large is refused before it is read.
    private const long MaxConfigBytes = 16 << 20;

    /// <summary>The options every CLIP config is written with.</summary>
    internal static readonly JsonSerializerOptions WriteOptions = new() { WriteIndented = true };

    /// <summary>A flat config.json: <c>architectures</c> first, then <paramref name="keys"/>, indented.</summary>
    internal static string WithArchitecture(string architecture, JsonObject keys)
    {
        var json = new JsonObject { ["architectures"] = new JsonArray(architecture) };
        foreach (var (key, value) in keys)
        {
            json[key] = value?.DeepClone();
        }

        return json.ToJsonString(WriteOptions);
    }

    /// <summary>Parses JSON text that must be an object.</summary>
    internal static JsonObject ParseObject(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonNode? root;
        try
        {
            RejectDuplicateKeys(json);
            root = JsonNode.Parse(json);
        }
        catch (JsonException e)
        {
            throw new FormatException($"The CLIP config is not valid JSON: {e.Message}", e);
        }

        return root as JsonObject ?? throw new FormatException("The CLIP config must be a JSON object.");
    }

    /// <summary>The nested object under <paramref name="key"/>, or null if the key is absent or null.</summary>
    internal static JsonObject? Nested(JsonObject json, string key)
    {
        if (!json.TryGetPropertyValue(key, out var node) || node is null)
        {
            return null;
        }

        return node as JsonObject ?? throw new FormatException($"The CLIP config key '{key}' must be a JSON object.");
    }

    /// <summary>Reads a config file, prefixing format and value errors with its path.</summary>
    internal static T FromFile<T>(string path, Func<string, T> parse)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The CLIP config file '{path}' does not exist.", path);
        }

        try
        {
            var length = new FileInfo(path).Length;
            if (length > MaxConfigBytes)
            {
                throw new FormatException($"the file has {length} bytes; a CLIP config.json larger than {MaxConfigBytes} bytes is refused.");
            }

            string text;
            try
            {
                text = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetString(File.ReadAllBytes(path));
            }
            catch (DecoderFallbackException e)
            {
                throw new FormatException("the file is not valid UTF-8.", e);
            }

            return parse(text.StartsWith('\uFEFF') ? text[1..] : text);
        }
        catch (FormatException e)
        {
            throw new FormatException($"{path}: {e.Message}", e);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{path}: {e.Message}", e.ParamName, e);
        }
    }

    internal static void RequirePositive(int value, string key)
    {
        if (value <= 0)
        {
            throw new ArgumentException($"{key} must be positive, got {value}.", key);
        }
    }

    internal static void RequireEps(double value, string key)
    {
        if (!double.IsFinite(value) || value <= 0)
        {
            throw new ArgumentException($"{key} must be a positive finite number, got {value}.", key);
        }
    }

    internal static void RequireActivation(ClipActivation activation, string key)
    {
        if (!Enum.IsDefined(activation))
        {
            throw new ArgumentException($"{key} has the unknown value {(int)activation}.", key);
        }
    }

    internal static bool Has(JsonObject json, string key) => json.TryGetPropertyValue(key, out var node) && node is not null;

    internal static int ReadInt(JsonObject json, string key, int fallback)
    {
        var value = Value(json, key);
        if (value is null)
        {
            return fallback;
        }

        if (value.GetValueKind() == JsonValueKind.Number && value.TryGetValue(out int result))
        {
            return result;
        }

        throw new FormatException($"The CLIP config key '{key}' must be an integer, got {value.ToJsonString()}.");
    }

    internal static double ReadDouble(JsonObject json, string key, double fallback)
    {
        var value = Value(json, key);
        if (value is null)
        {
            return fallback;
        }

        if (value.GetValueKind() == JsonValueKind.Number && value.TryGetValue(out double result))
        {
            return result;
        }

        throw new FormatException($"The CLIP config key '{key}' must be a number, got {value.ToJsonString()}.");
    }

    internal static ClipActivation ReadActivation(JsonObject json, ClipActivation fallback)
    {
        var value = Value(json, "hidden_act");
        if (value is null)
        {
            return fallback;
        }

        if (value.GetValueKind() != JsonValueKind.String)
        {
            throw new FormatException($"The CLIP config key 'hidden_act' must be a string, got {value.ToJsonString()}.");
        }

        string name = value.GetValue<string>();
        return name switch
        {
            "quick_gelu" => ClipActivation.QuickGelu,
            "gelu" => ClipActivation.Gelu,
            _ => throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture, $"hidden_act '{name}' is not supported; use 'quick_gelu' or 'gelu'."), "hidden_act"),
        };
    }

    /// <summary>The HF name of an activation (<c>quick_gelu</c> or <c>gelu</c>).</summary>
    internal static string ActivationName(ClipActivation activation) => activation switch
    {
        ClipActivation.QuickGelu => "quick_gelu",
        ClipActivation.Gelu => "gelu",
        _ => throw new ArgumentOutOfRangeException(nameof(activation), activation, "Unknown CLIP activation."),
    };

    private static JsonValue? Value(JsonObject json, string key)
    {
        if (!json.TryGetPropertyValue(key, out var node) || node is null)
        {
            return null;
        }

        return node as JsonValue ?? throw new FormatException($"The CLIP config key '{key}' must be a scalar, got {node.ToJsonString()}.");
    }

    /// <summary>
    /// Throws when an object of the JSON text has a key twice (System.Text.Json.Nodes would fail with "An item with the
    /// same key has already been added", naming no key) or a string holds a lone surrogate escape.
    /// </summary>
    private static void RejectDuplicateKeys(string json)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { MaxDepth = 64 });
        var scopes = new Stack<(string Path, HashSet<string> Keys)>();
        string? pendingKey = null;
        while (reader.Read())
        {
            switch (reader.TokenType)
            {
                case JsonTokenType.StartObject:
                    var path = scopes.Count == 0 ? "" : pendingKey is null ? scopes.Peek().Path + "[]" : Join(scopes.Peek().Path, pendingKey);
                    scopes.Push((path, new HashSet<string>(StringComparer.Ordinal)));
                    pendingKey = null;
                    break;
                case JsonTokenType.StartArray:
                    scopes.Push((scopes.Count == 0 ? "" : Join(scopes.Peek().Path, pendingKey ?? "[]"), new HashSet<string>(StringComparer.Ordinal)));
                    pendingKey = null;
                    break;
                case JsonTokenType.EndObject:
                case JsonTokenType.EndArray:
                    scopes.Pop();
                    pendingKey = null;
                    break;
                case JsonTokenType.PropertyName:
                    SafeTensors.StrictJson.CheckEscapes(ref reader);
                    pendingKey = reader.GetString()!;
                    if (!scopes.Peek().Keys.Add(pendingKey))
                    {
                        throw new FormatException($"The CLIP config has the key '{Join(scopes.Peek().Path, pendingKey)}' more than once.");
                    }
                    break;
                case JsonTokenType.String:
                    SafeTensors.StrictJson.CheckEscapes(ref reader);
                    pendingKey = null;
                    break;
                default:
                    pendingKey = null;
                    break;
            }
        }
    }

    private static string Join(string path, string key) => path.Length == 0 ? key : path + "." + key;

    internal static string? ReadModelType(JsonObject json, string key)
    {
        var value = Value(json, "model_type");
        if (value is null)
        {
            return null;
        }
        if (value.GetValueKind() != JsonValueKind.String)
        {
            throw new FormatException($"The CLIP config key '{key}' must be a string, got {value.ToJsonString()}.");
        }
        return value.GetValue<string>();
    }
}
