using System.Globalization;
using System.Text.Json;

namespace WeightEnsembling.Text;

/// <summary>
/// The vocabulary, merges and special tokens of a CLIP tokenizer, read from a checkpoint folder: <c>tokenizer.json</c>
/// (the Hugging Face fast-tokenizer file) when present, else <c>vocab.json</c> + <c>merges.txt</c> (the slow-tokenizer
/// files); then <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c> when present.
/// </summary>
internal sealed class ClipVocabularyFiles
{
    public const string TokenizerJsonFileName = "tokenizer.json";
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";
    public const string TokenizerConfigFileName = "tokenizer_config.json";
    public const string SpecialTokensMapFileName = "special_tokens_map.json";

    private ClipVocabularyFiles(string vocabularySource, string mergesSource, Dictionary<string, int> vocabulary, List<(string Merge, string Where)> merges, List<string> addedTokens)
    {
        VocabularySource = vocabularySource;
        MergesSource = mergesSource;
        Vocabulary = vocabulary;
        Merges = merges;
        AddedTokens = addedTokens;
    }

    /// <summary>The file the vocabulary came from (for messages).</summary>
    public string VocabularySource { get; }

    /// <summary>The file the merges came from (for messages).</summary>
    public string MergesSource { get; }

    /// <summary>Token → id, added tokens included.</summary>
    public Dictionary<string, int> Vocabulary { get; }

    /// <summary>The merges in rank order, each as "first second", with where it was read (for messages).</summary>
    public List<(string Merge, string Where)> Merges { get; }

    /// <summary>The added tokens of <c>tokenizer.json</c> (empty for the slow-tokenizer files).</summary>
    public List<string> AddedTokens { get; }

    public string BosToken { get; private set; } = "<|startoftext|>";

    public string EosToken { get; private set; } = "<|endoftext|>";

    public string PadToken { get; private set; } = "<|endoftext|>";

    public string UnkToken { get; private set; } = "<|endoftext|>";

    /// <summary><c>model_max_length</c> of <c>tokenizer_config.json</c>, when it is a usable length.</summary>
    public int? ModelMaxLength { get; private set; }

    /// <summary>The file that named the special tokens last (for messages).</summary>
    public string SpecialTokensSource { get; private set; } = "the CLIP defaults";

    public static ClipVocabularyFiles Read(string folder)
    {
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"Tokenizer folder '{folder}' does not exist.");
        }
        var tokenizerJson = Path.Combine(folder, TokenizerJsonFileName);
        var vocabJson = Path.Combine(folder, VocabFileName);
        var mergesTxt = Path.Combine(folder, MergesFileName);
        ClipVocabularyFiles files;
        if (File.Exists(tokenizerJson))
        {
            files = ReadTokenizerJson(tokenizerJson);
        }
        else if (File.Exists(vocabJson) && File.Exists(mergesTxt))
        {
            files = new ClipVocabularyFiles(vocabJson, mergesTxt, ReadVocabJson(vocabJson), ReadMergesTxt(mergesTxt), []);
        }
        else
        {
            var missing = File.Exists(vocabJson) ? MergesFileName : File.Exists(mergesTxt) ? VocabFileName : $"{VocabFileName} and {MergesFileName}";
            throw new FileNotFoundException(
                $"Tokenizer folder '{folder}' has no {TokenizerJsonFileName} and no {missing}: a CLIP tokenizer needs {TokenizerJsonFileName}, or {VocabFileName} with {MergesFileName}.",
                File.Exists(vocabJson) ? mergesTxt : vocabJson);
        }
        var config = Path.Combine(folder, TokenizerConfigFileName);
        if (File.Exists(config))
        {
            files.ReadSpecialTokens(config, readMaxLength: true);
        }
        var map = Path.Combine(folder, SpecialTokensMapFileName);
        if (File.Exists(map))
        {
            files.ReadSpecialTokens(map, readMaxLength: false);
        }
        return files;
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {ex.Message}", ex);
        }
    }

    private static Dictionary<string, int> ReadVocabJson(string path)
    {
        using var document = ParseJson(path);
        return ReadVocabObject(document.RootElement, path, "the top-level value");
    }

    private static Dictionary<string, int> ReadVocabObject(JsonElement element, string path, string where)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"'{path}': {where} must be a JSON object of token → id, found {element.ValueKind}.");
        }
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var property in element.EnumerateObject())
        {
            if (property.Value.ValueKind != JsonValueKind.Number || !property.Value.TryGetInt32(out var id) || id < 0)
            {
                throw new InvalidDataException($"'{path}': the id of token '{property.Name}' must be a non-negative integer, found {property.Value.GetRawText()}.");
            }
            if (!vocabulary.TryAdd(property.Name, id))
            {
                throw new InvalidDataException($"'{path}': token '{property.Name}' appears twice.");
            }
        }
        if (vocabulary.Count == 0)
        {
            throw new InvalidDataException($"'{path}': the vocabulary is empty.");
        }
        var ids = new HashSet<int>();
        foreach (var (token, id) in vocabulary)
        {
            if (!ids.Add(id))
            {
                throw new InvalidDataException($"'{path}': id {id} is given to more than one token (one of them '{token}').");
            }
        }
        return vocabulary;
    }

    private static List<(string Merge, string Where)> ReadMergesTxt(string path)
    {
        var merges = new List<(string Merge, string Where)>();
        var lineNumber = 0;
        foreach (var rawLine in File.ReadLines(path))
        {
            lineNumber++;
            var line = rawLine.TrimEnd('\r');
            if (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal))
            {
                continue;
            }
            if (line.Length == 0)
            {
                continue;
            }
            var where = $"line {lineNumber}";
            merges.Add((CheckMerge(line, path, where), where));
        }
        return merges;
    }

    private static string CheckMerge(string merge, string path, string where)
    {
        var parts = merge.Split(' ');
        if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
        {
            throw new InvalidDataException($"'{path}' {where}: a merge must be two symbols separated by one space, found '{merge}'.");
        }
        return merge;
    }

    private static ClipVocabularyFiles ReadTokenizerJson(string path)
    {
        using var document = ParseJson(path);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"'{path}' has no \"model\" object.");
        }
        if (model.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String && type.GetString() != "BPE")
        {
            throw new InvalidDataException($"'{path}': model.type is '{type.GetString()}', a CLIP tokenizer needs 'BPE'.");
        }
        if (model.TryGetProperty("end_of_word_suffix", out var suffix) && suffix.ValueKind == JsonValueKind.String && suffix.GetString() != ClipTokenizer.EndOfWordSuffix)
        {
            throw new InvalidDataException($"'{path}': model.end_of_word_suffix is '{suffix.GetString()}', CLIP's is '{ClipTokenizer.EndOfWordSuffix}'.");
        }
        if (!model.TryGetProperty("vocab", out var vocabElement))
        {
            throw new InvalidDataException($"'{path}' has no model.vocab.");
        }
        var vocabulary = ReadVocabObject(vocabElement, path, "model.vocab");
        if (!model.TryGetProperty("merges", out var mergesElement) || mergesElement.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidDataException($"'{path}' has no model.merges array.");
        }
        var merges = new List<(string Merge, string Where)>();
        var index = 0;
        foreach (var item in mergesElement.EnumerateArray())
        {
            var where = $"model.merges[{index}]";
            if (item.ValueKind == JsonValueKind.String)
            {
                merges.Add((CheckMerge(item.GetString()!, path, where), where));
            }
            else if (item.ValueKind == JsonValueKind.Array && item.GetArrayLength() == 2
                && item[0].ValueKind == JsonValueKind.String && item[1].ValueKind == JsonValueKind.String)
            {
                // tokenizers ≥ 0.20 writes each merge as a pair of strings.
                merges.Add((CheckMerge($"{item[0].GetString()} {item[1].GetString()}", path, where), where));
            }
            else
            {
                throw new InvalidDataException($"'{path}' {where}: a merge must be \"a b\" or [\"a\", \"b\"], found {item.GetRawText()}.");
            }
            index++;
        }
        var added = new List<string>();
        if (root.TryGetProperty("added_tokens", out var addedElement) && addedElement.ValueKind == JsonValueKind.Array)
        {
            var addedIndex = 0;
            foreach (var item in addedElement.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Object
                    || !item.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String
                    || !item.TryGetProperty("id", out var idElement) || !idElement.TryGetInt32(out var id) || id < 0)
                {
                    throw new InvalidDataException($"'{path}' added_tokens[{addedIndex}]: needs a string \"content\" and a non-negative integer \"id\".");
                }
                var token = content.GetString()!;
                if (vocabulary.TryGetValue(token, out var existing))
                {
                    if (existing != id)
                    {
                        throw new InvalidDataException($"'{path}' added_tokens[{addedIndex}]: '{token}' has id {id} but model.vocab gives it {existing}.");
                    }
                }
                else
                {
                    if (vocabulary.ContainsValue(id))
                    {
                        throw new InvalidDataException($"'{path}' added_tokens[{addedIndex}]: id {id} of '{token}' is already taken in model.vocab.");
                    }
                    vocabulary.Add(token, id);
                }
                added.Add(token);
                addedIndex++;
            }
        }
        return new ClipVocabularyFiles(path, path, vocabulary, merges, added);
    }

    private void ReadSpecialTokens(string path, bool readMaxLength)
    {
        using var document = ParseJson(path);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"'{path}' must hold a JSON object.");
        }
        BosToken = ReadToken(root, "bos_token", path) ?? BosToken;
        EosToken = ReadToken(root, "eos_token", path) ?? EosToken;
        PadToken = ReadToken(root, "pad_token", path) ?? PadToken;
        UnkToken = ReadToken(root, "unk_token", path) ?? UnkToken;
        if (root.TryGetProperty("bos_token", out _) || root.TryGetProperty("eos_token", out _) || root.TryGetProperty("pad_token", out _))
        {
            SpecialTokensSource = path;
        }
        if (readMaxLength && root.TryGetProperty("model_max_length", out var maxLength) && maxLength.ValueKind == JsonValueKind.Number)
        {
            // transformers writes a huge number (int(1e30)) when a checkpoint sets no limit: no usable length then.
            if (maxLength.TryGetDouble(out var value) && value >= 2 && value <= ClipTokenizer.MaxContextLength && value == Math.Floor(value))
            {
                ModelMaxLength = (int)value;
            }
        }
    }

    private static string? ReadToken(JsonElement root, string name, string path)
    {
        if (!root.TryGetProperty(name, out var element) || element.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        if (element.ValueKind == JsonValueKind.String)
        {
            return element.GetString();
        }
        if (element.ValueKind == JsonValueKind.Object && element.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String)
        {
            return content.GetString();
        }
        throw new InvalidDataException($"'{path}': {name} must be a string or an object with a string \"content\", found {element.GetRawText()}.");
    }

    /// <summary>Formats a token for a message, escaping control characters.</summary>
    public static string Show(string token) => string.Concat(token.Select(c => char.IsControl(c) ? $"\\u{(int)c:X4}" : c.ToString(CultureInfo.InvariantCulture)));
}
