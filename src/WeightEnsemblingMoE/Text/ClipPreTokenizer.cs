using System.Globalization;
using System.Text;

namespace WeightEnsembling.Text;

/// <summary>
/// CLIP's pre-tokenisation: <c>re.findall</c> of
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
/// (IGNORECASE) over cleaned, lower-cased text. Written as a scanner over Unicode scalar values rather than a .NET
/// <see cref="System.Text.RegularExpressions.Regex"/>: .NET's regex engine matches UTF-16 code units, so a letter or
/// digit outside the Basic Multilingual Plane (a surrogate pair, category Cs to the engine) would fall into the
/// <c>[^\s\p{L}\p{N}]+</c> class, where Python's <c>regex</c> module sees one letter or digit.
/// </summary>
internal static class ClipPreTokenizer
{
    private static readonly string[] Literals =
    [
        "<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
    ];

    /// <summary>The words of <paramref name="text"/>, in order.</summary>
    public static List<string> Split(string text)
    {
        var words = new List<string>();
        var position = 0;
        while (position < text.Length)
        {
            var rune = Rune.GetRuneAt(text, position);
            if (Rune.IsWhiteSpace(rune))
            {
                position += rune.Utf16SequenceLength;
                continue;
            }
            var length = MatchLiteral(text, position);
            if (length == 0)
            {
                var kind = Classify(rune);
                if (kind == CharKind.Number)
                {
                    length = rune.Utf16SequenceLength;
                }
                else
                {
                    // [\p{L}]+ or [^\s\p{L}\p{N}]+: the longest run of the same kind.
                    var end = position;
                    while (end < text.Length)
                    {
                        var next = Rune.GetRuneAt(text, end);
                        if (Rune.IsWhiteSpace(next) || Classify(next) != kind)
                        {
                            break;
                        }
                        end += next.Utf16SequenceLength;
                    }
                    length = end - position;
                }
            }
            words.Add(text.Substring(position, length));
            position += length;
        }
        return words;
    }

    /// <summary>The length of the first literal alternative that matches at <paramref name="position"/>, or 0.</summary>
    private static int MatchLiteral(string text, int position)
    {
        foreach (var literal in Literals)
        {
            if (position + literal.Length > text.Length)
            {
                continue;
            }
            var matched = true;
            for (var i = 0; i < literal.Length; i++)
            {
                if (!FoldsTo(text[position + i], literal[i]))
                {
                    matched = false;
                    break;
                }
            }
            if (matched)
            {
                return literal.Length;
            }
        }
        return 0;
    }

    /// <summary>
    /// Case-insensitive comparison with an ASCII pattern character, as Python's <c>regex</c> module does it with simple
    /// case folding: besides the ASCII letters' own cases, U+017F (long s) folds to 's' and U+212A (Kelvin sign) to
    /// 'k'.
    /// </summary>
    private static bool FoldsTo(char c, char pattern)
    {
        if (c == pattern)
        {
            return true;
        }
        if (pattern is >= 'a' and <= 'z')
        {
            return c == char.ToUpperInvariant(pattern) || (pattern == 's' && c == '\u017F') || (pattern == 'k' && c == '\u212A');
        }
        return false;
    }

    private static CharKind Classify(Rune rune) => Rune.GetUnicodeCategory(rune) switch
    {
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
            or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => CharKind.Letter,
        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => CharKind.Number,
        _ => CharKind.Other,
    };

    private enum CharKind
    {
        Letter,
        Number,
        Other,
    }
}
