using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace WeightEnsembling.World;

/// <summary>
/// Learns a byte-level BPE vocabulary in CLIP's file format from texts: <c>vocab.json</c> (the 256 byte symbols of
/// GPT-2's <c>bytes_to_unicode</c>, the same with <c>&lt;/w&gt;</c>, one token per merge, then
/// <c>&lt;|startoftext|&gt;</c> and <c>&lt;|endoftext|&gt;</c>, as OpenAI's <c>simple_tokenizer.py</c> builds it) and
/// <c>merges.txt</c> (<c>#version: 0.2</c>, then one merge a line, by rank). Words are cut as CLIP cuts them (lower
/// case, collapsed whitespace, CLIP's regular expression), the last symbol of each word ending in <c>&lt;/w&gt;</c>;
/// each round merges the most frequent adjacent pair (ties by ordinal order, so the result is deterministic).
/// Microsoft.ML.Tokenizers 2.0.1 reads BPE vocabularies but has no trainer, hence this one.
/// </summary>
public static partial class BpeTrainer
{
    public const string StartOfText = "<|startoftext|>";
    public const string EndOfText = "<|endoftext|>";
    private const string EndOfWord = "</w>";

    /// <summary>Learns merges until the vocabulary holds <paramref name="vocabSize"/> tokens (or no pair repeats), writes the files to <paramref name="folder"/>.</summary>
    /// <returns>The vocabulary size written.</returns>
    public static int Train(IEnumerable<string> texts, int vocabSize, int contextLength, string folder)
    {
        ArgumentNullException.ThrowIfNull(texts);
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 514);
        var table = BytesToUnicode();
        var byteSymbols = new string[256];
        foreach (var (b, symbol) in table)
        {
            byteSymbols[b] = symbol;
        }

        var words = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string text in texts)
        {
            foreach (Match match in WordPattern().Matches(Regex.Replace(text.Trim(), @"\s+", " ").ToLowerInvariant()))
            {
                words[match.Value] = words.GetValueOrDefault(match.Value) + 1;
            }
        }

        var vocabulary = table.Select(t => t.Symbol).ToList();
        vocabulary.AddRange(table.Select(t => t.Symbol + EndOfWord));
        var known = new HashSet<string>(vocabulary, StringComparer.Ordinal);
        var corpus = words.OrderBy(w => w.Key, StringComparer.Ordinal).Select(w =>
        {
            var symbols = Encoding.UTF8.GetBytes(w.Key).Select(b => byteSymbols[b]).ToList();
            symbols[^1] += EndOfWord;
            return (Symbols: symbols, Count: w.Value);
        }).ToList();
        var merges = new List<(string, string)>();
        var banned = new HashSet<(string, string)>();
        while (vocabulary.Count + merges.Count + 2 < vocabSize)
        {
            var pairs = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in corpus)
            {
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    var pair = (symbols[i], symbols[i + 1]);
                    if (!banned.Contains(pair))
                    {
                        pairs[pair] = pairs.GetValueOrDefault(pair) + count;
                    }
                }
            }

            var best = pairs.Where(p => p.Value >= 2)
                .OrderByDescending(p => p.Value).ThenBy(p => p.Key.Item1, StringComparer.Ordinal).ThenBy(p => p.Key.Item2, StringComparer.Ordinal)
                .Select(p => p.Key).FirstOrDefault();
            if (best == default)
            {
                break;
            }

            string merged = best.Item1 + best.Item2;
            if (!known.Add(merged))
            {
                // Another merge already made this token: a second entry would duplicate it in vocab.json.
                banned.Add(best);
                continue;
            }

            merges.Add(best);
            foreach (var (symbols, _) in corpus)
            {
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    if (symbols[i] == best.Item1 && symbols[i + 1] == best.Item2)
                    {
                        symbols[i] = merged;
                        symbols.RemoveAt(i + 1);
                    }
                }
            }
        }

        vocabulary.AddRange(merges.Select(m => m.Item1 + m.Item2));
        vocabulary.Add(StartOfText);
        vocabulary.Add(EndOfText);
        Directory.CreateDirectory(folder);
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < vocabulary.Count; i++)
        {
            ids.Add(vocabulary[i], i);
        }

        WriteAtomically(Path.Combine(folder, "vocab.json"), JsonSerializer.Serialize(ids));
        WriteAtomically(Path.Combine(folder, "merges.txt"), "#version: 0.2\n" + string.Concat(merges.Select(m => $"{m.Item1} {m.Item2}\n")));
        WriteAtomically(Path.Combine(folder, "tokenizer_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["model_max_length"] = contextLength,
            ["bos_token"] = StartOfText,
            ["eos_token"] = EndOfText,
            ["pad_token"] = EndOfText,
            ["unk_token"] = EndOfText,
            ["tokenizer_class"] = "CLIPTokenizer",
        }));
        return vocabulary.Count;
    }

    /// <summary>GPT-2's <c>bytes_to_unicode</c>: (byte, symbol) pairs in its order, which is the vocabulary's (printable bytes first).</summary>
    public static List<(int Byte, string Symbol)> BytesToUnicode()
    {
        var bs = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToList();
        var cs = new List<int>(bs);
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            if (!bs.Contains(b))
            {
                bs.Add(b);
                cs.Add(256 + n);
                n++;
            }
        }

        return bs.Select((b, i) => (b, char.ConvertFromUtf32(cs[i]))).ToList();
    }

    private static void WriteAtomically(string path, string text)
    {
        File.WriteAllText(path + ".tmp", text);
        File.Move(path + ".tmp", path, overwrite: true);
    }

    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")]
    private static partial Regex WordPattern();
}
