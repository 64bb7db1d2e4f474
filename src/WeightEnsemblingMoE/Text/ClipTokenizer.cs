using System.Collections.Concurrent;
using Microsoft.ML.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Text;

/// <summary>
/// CLIP's text tokenizer, read from a checkpoint folder: byte-level BPE with the <c>&lt;/w&gt;</c> end-of-word suffix,
/// as transformers' <c>CLIPTokenizer</c> and OpenAI's <c>simple_tokenizer.py</c> compute it.
/// </summary>
/// <remarks>
/// <para>
/// Files: <c>tokenizer.json</c> (the Hugging Face fast-tokenizer file: <c>model.vocab</c>, <c>model.merges</c>,
/// <c>added_tokens</c>) when present, else <c>vocab.json</c> + <c>merges.txt</c> (CLIP's slow-tokenizer files;
/// a first line starting with <c>#version</c> is skipped); then <c>tokenizer_config.json</c> and
/// <c>special_tokens_map.json</c> (which wins, as in transformers) for the start, end, padding and unknown tokens
/// and <c>model_max_length</c>. Without them the tokens are CLIP's: <c>&lt;|startoftext|&gt;</c>, and
/// <c>&lt;|endoftext|&gt;</c> for end, padding and unknown; the context length is 77.
/// </para>
/// <para>
/// Encoding, step by step, as transformers' <c>CLIPTokenizer</c> does it when <c>ftfy</c> is not installed (its
/// documented fallback; <c>ftfy.fix_text</c> repairs mojibake with heuristics that no specification pins down):
/// (1) the text is split on the special tokens, matched exactly and case-sensitively, each becoming its id;
/// (2) each other piece is cleaned as BERT's <c>BasicTokenizer</c> does with <c>strip_accents=False</c> and no
/// punctuation split: NUL, U+FFFD and control/format characters (Cc, Cf; not tab, newline, carriage return)
/// are dropped, whitespace becomes a space, CJK ideographs get a space on both sides, the text is NFC-normalised,
/// split on whitespace, each word lower-cased as Python's <c>str.lower</c> does, and the words joined by single
/// spaces; (3) CLIP's pattern
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
/// (IGNORECASE) splits it into words; (4) the words <c>&lt;|startoftext|&gt;</c> and <c>&lt;|endoftext|&gt;</c> map
/// to their vocabulary ids; every other word is UTF-8 encoded, each byte mapped to a character by GPT-2's
/// <c>bytes_to_unicode</c>, <c>&lt;/w&gt;</c> appended to its last symbol, and merged pair by pair in merge-rank
/// order; (5) <see cref="BosTokenId"/> and <see cref="EosTokenId"/> go around the ids, which are cut to the first
/// <see cref="ContextLength"/> − 2 when longer (transformers' <c>truncation=True, max_length=77</c>).
/// </para>
/// <para>
/// Step (4)'s BPE is Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> (byte-level, end-of-word suffix
/// <c>&lt;/w&gt;</c>), called word by word. Steps (1)–(3) are ours, because the library cannot reproduce them:
/// its <see cref="RegexPreTokenizer"/> runs a .NET <see cref="System.Text.RegularExpressions.Regex"/>, which matches
/// UTF-16 code units, so a letter or digit outside the Basic Multilingual Plane (a surrogate pair) would fall into
/// CLIP's <c>[^\s\p{L}\p{N}]+</c> class, where Python's <c>regex</c> sees a letter or digit; its
/// <see cref="LowerCaseNormalizer"/> maps one UTF-16 unit to one, where Python's <c>str.lower</c> turns U+0130 into two
/// characters and chooses final sigma by context; and the words <c>&lt;|startoftext|&gt;</c> and
/// <c>&lt;|endoftext|&gt;</c>, which CLIP's pattern can produce from lower-cased text, must map to their ids,
/// not be BPE-encoded.
/// </para>
/// <para>
/// Known differences from the fast tokenizer (<c>CLIPTokenizerFast</c>) and from OpenAI's tokenizer with
/// <c>ftfy</c>: those do not put spaces around CJK ideographs (so a run of them is one BPE word, here each is its
/// own word) and do not drop control characters; OpenAI's also unescapes HTML entities. For English prompts and
/// class names all three agree. transformers' slow tokenizer reads at most 48,894 merges (CLIP's count); this one
/// reads all the file has. Instances are safe to use from several threads.
/// </para>
/// </remarks>
public sealed class ClipTokenizer
{
    /// <summary>CLIP's end-of-word suffix.</summary>
    internal const string EndOfWordSuffix = "</w>";

    /// <summary>The longest context length accepted.</summary>
    internal const int MaxContextLength = 1_000_000;

    /// <summary>CLIP's text context length, used when the folder does not give one.</summary>
    internal const int DefaultContextLength = 77;

    /// <summary>The most words whose ids are cached (a bound on memory for long-running use).</summary>
    private const int MaxCachedWords = 100_000;

    private const string StartOfTextLiteral = "<|startoftext|>";
    private const string EndOfTextLiteral = "<|endoftext|>";

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocabulary;
    private readonly string[] _splitTokens;
    private readonly string _vocabularySource;
    private readonly int _unkTokenId;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);

    private ClipTokenizer(ClipVocabularyFiles files, int contextLength, string folder)
    {
        Folder = folder;
        ContextLength = contextLength;
        _vocabulary = files.Vocabulary;
        _vocabularySource = files.VocabularySource;
        BosTokenId = RequireToken(files, files.BosToken, "start-of-text (bos_token)");
        EosTokenId = RequireToken(files, files.EosToken, "end-of-text (eos_token)");
        PadTokenId = RequireToken(files, files.PadToken, "padding (pad_token)");
        _unkTokenId = RequireToken(files, files.UnkToken, "unknown (unk_token)");
        CheckByteSymbols(files);
        CheckMerges(files);
        _splitTokens = files.AddedTokens
            .Concat([files.BosToken, files.EosToken, files.PadToken, files.UnkToken])
            .Where(token => token.Length > 0)
            .Distinct(StringComparer.Ordinal)
            .ToArray();
        var options = new BpeOptions(files.Vocabulary)
        {
            Merges = files.Merges.Select(m => m.Merge),
            EndOfWordSuffix = EndOfWordSuffix,
            ByteLevel = true,
            UnknownToken = files.UnkToken,
        };
        _bpe = BpeTokenizer.Create(options);
    }

    /// <summary>The folder the tokenizer was read from.</summary>
    public string Folder { get; }

    /// <summary>
    /// The number of ids <see cref="EncodeBatch"/> gives each text, and the most <see cref="Encode"/> returns
    /// (start and end tokens included). CLIP's is 77.
    /// </summary>
    public int ContextLength { get; }

    /// <summary>The id of the start-of-text token (CLIP's <c>&lt;|startoftext|&gt;</c>: 49406).</summary>
    public int BosTokenId { get; }

    /// <summary>The id of the end-of-text token (CLIP's <c>&lt;|endoftext|&gt;</c>: 49407).</summary>
    public int EosTokenId { get; }

    /// <summary>The id used for padding (CLIP's is the end-of-text token's).</summary>
    public int PadTokenId { get; }

    /// <summary>The number of tokens in the vocabulary, added tokens included (CLIP's: 49,408).</summary>
    public int VocabSize => _vocabulary.Count;

    /// <summary>Reads a CLIP tokenizer from a checkpoint folder.</summary>
    /// <param name="folder">The folder with <c>tokenizer.json</c>, or <c>vocab.json</c> and <c>merges.txt</c>.</param>
    /// <param name="contextLength">
    /// The context length; <see langword="null"/> takes <c>model_max_length</c> from <c>tokenizer_config.json</c>,
    /// or 77 when the folder does not give a usable one.
    /// </param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">Neither <c>tokenizer.json</c> nor both slow-tokenizer files are there.</exception>
    /// <exception cref="InvalidDataException">A file is malformed (the message names the file, and the line or entry).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="contextLength"/> is below 2 or above 1,000,000.</exception>
    public static ClipTokenizer FromPretrained(string folder, int? contextLength = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        if (contextLength is { } length)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(length, 2, nameof(contextLength));
            ArgumentOutOfRangeException.ThrowIfGreaterThan(length, MaxContextLength, nameof(contextLength));
        }
        var files = ClipVocabularyFiles.Read(folder);
        return new ClipTokenizer(files, contextLength ?? files.ModelMaxLength ?? DefaultContextLength, folder);
    }

    /// <summary>
    /// Checks the vocabulary size against the one a model expects (a text model's <c>vocab_size</c>, 49,408 for
    /// CLIP), so that every id the tokenizer gives has an embedding.
    /// </summary>
    /// <param name="vocabSize">The model's vocabulary size.</param>
    /// <exception cref="InvalidDataException">The sizes differ, or an id is not below <paramref name="vocabSize"/>; the message names the vocabulary file.</exception>
    public void CheckAgainst(int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        if (VocabSize != vocabSize)
        {
            throw new InvalidDataException($"'{_vocabularySource}' has {VocabSize} tokens but the model expects vocab_size = {vocabSize}.");
        }
        var maxId = _vocabulary.Values.Max();
        if (maxId >= vocabSize)
        {
            throw new InvalidDataException($"'{_vocabularySource}' has id {maxId}, outside the model's vocab_size = {vocabSize}.");
        }
    }

    /// <summary>
    /// Encodes one text: the start token, the text's ids (the first <see cref="ContextLength"/> − 2 when longer),
    /// the end token.
    /// </summary>
    /// <param name="text">The text.</param>
    /// <returns>The ids, at most <see cref="ContextLength"/> of them.</returns>
    public IReadOnlyList<int> Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = EncodeText(text);
        var keep = Math.Min(ids.Count, ContextLength - 2);
        var result = new int[keep + 2];
        result[0] = BosTokenId;
        ids.CopyTo(0, result, 1, keep);
        result[keep + 1] = EosTokenId;
        return result;
    }

    /// <summary>
    /// Encodes texts into a batch: each row is <see cref="Encode"/>'s ids followed by <see cref="PadTokenId"/> up to
    /// <see cref="ContextLength"/>.
    /// </summary>
    /// <param name="texts">The texts.</param>
    /// <param name="attentionMask">int64 [N, <see cref="ContextLength"/>]: 1 where a row has a token, 0 where it is padded.</param>
    /// <returns>The ids, int64 [N, <see cref="ContextLength"/>], on the CPU.</returns>
    /// <exception cref="ArgumentException">A text is <see langword="null"/>.</exception>
    public Tensor EncodeBatch(IReadOnlyList<string> texts, out Tensor attentionMask)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var ids = new long[(long)texts.Count * ContextLength];
        var mask = new long[ids.Length];
        for (var row = 0; row < texts.Count; row++)
        {
            var text = texts[row] ?? throw new ArgumentException($"texts[{row}] is null.", nameof(texts));
            var encoded = Encode(text);
            var offset = row * ContextLength;
            for (var column = 0; column < ContextLength; column++)
            {
                if (column < encoded.Count)
                {
                    ids[offset + column] = encoded[column];
                    mask[offset + column] = 1;
                }
                else
                {
                    ids[offset + column] = PadTokenId;
                }
            }
        }
        var shape = new long[] { texts.Count, ContextLength };
        attentionMask = torch.tensor(mask, shape, ScalarType.Int64, device: torch.CPU);
        return torch.tensor(ids, shape, ScalarType.Int64, device: torch.CPU);
    }

    /// <summary>The ids of <paramref name="text"/> without start and end tokens and without truncation.</summary>
    internal List<int> EncodeText(string text)
    {
        var ids = new List<int>();
        var position = 0;
        while (position < text.Length)
        {
            var (start, special) = FindSpecialToken(text, position);
            if (start > position)
            {
                EncodePiece(text[position..start], ids);
            }
            if (special is null)
            {
                break;
            }
            ids.Add(_vocabulary[special]);
            position = start + special.Length;
        }
        return ids;
    }

    /// <summary>The leftmost occurrence of a special token at or after <paramref name="from"/> (the longest if several start there).</summary>
    private (int Start, string? Token) FindSpecialToken(string text, int from)
    {
        var bestStart = text.Length;
        string? best = null;
        foreach (var token in _splitTokens)
        {
            var start = text.IndexOf(token, from, StringComparison.Ordinal);
            if (start >= 0 && (start < bestStart || (start == bestStart && token.Length > best!.Length)))
            {
                bestStart = start;
                best = token;
            }
        }
        return (bestStart, best);
    }

    private void EncodePiece(string piece, List<int> ids)
    {
        var cleaned = ClipTextCleaner.Clean(piece);
        foreach (var word in ClipPreTokenizer.Split(cleaned))
        {
            if (word is StartOfTextLiteral or EndOfTextLiteral)
            {
                ids.Add(_vocabulary.TryGetValue(word, out var id) ? id : _unkTokenId);
                continue;
            }
            if (!_cache.TryGetValue(word, out var wordIds))
            {
                wordIds = _bpe.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false).ToArray();
                if (_cache.Count < MaxCachedWords)
                {
                    _cache.TryAdd(word, wordIds);
                }
            }
            ids.AddRange(wordIds);
        }
    }

    private int RequireToken(ClipVocabularyFiles files, string token, string role)
    {
        if (!files.Vocabulary.TryGetValue(token, out var id))
        {
            throw new InvalidDataException(
                $"'{files.VocabularySource}' has no '{ClipVocabularyFiles.Show(token)}', the {role} token named by {files.SpecialTokensSource}.");
        }
        return id;
    }

    /// <summary>CLIP's vocabulary starts with the 256 byte symbols and their end-of-word forms: all must be there.</summary>
    private static void CheckByteSymbols(ClipVocabularyFiles files)
    {
        foreach (var symbol in ByteLevelSymbols())
        {
            foreach (var token in new[] { symbol, symbol + EndOfWordSuffix })
            {
                if (!files.Vocabulary.ContainsKey(token))
                {
                    throw new InvalidDataException(
                        $"'{files.VocabularySource}' lacks the byte-level symbol '{ClipVocabularyFiles.Show(token)}': a CLIP vocabulary holds all 256 byte symbols and their '{EndOfWordSuffix}' forms.");
                }
            }
        }
    }

    private static void CheckMerges(ClipVocabularyFiles files)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (merge, where) in files.Merges)
        {
            var space = merge.IndexOf(' ', StringComparison.Ordinal);
            var first = merge[..space];
            var second = merge[(space + 1)..];
            foreach (var symbol in new[] { first, second, first + second })
            {
                if (!files.Vocabulary.ContainsKey(symbol))
                {
                    throw new InvalidDataException(
                        $"'{files.MergesSource}' {where}: '{ClipVocabularyFiles.Show(symbol)}' of merge '{ClipVocabularyFiles.Show(merge)}' is not in the vocabulary ('{files.VocabularySource}').");
                }
            }
            if (!seen.Add(merge))
            {
                throw new InvalidDataException($"'{files.MergesSource}' {where}: merge '{ClipVocabularyFiles.Show(merge)}' appears twice.");
            }
        }
    }

    /// <summary>GPT-2's <c>bytes_to_unicode</c>: the character each byte value stands for in a byte-level vocabulary.</summary>
    internal static string[] ByteLevelSymbols()
    {
        var symbols = new string[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            symbols[b] = ((char)(printable ? b : next++)).ToString();
        }
        return symbols;
    }
}
