using System.Globalization;
using System.Text;

namespace WeightEnsembling.Text;

/// <summary>
/// The text clean-up that transformers' <c>CLIPTokenizer</c> applies when <c>ftfy</c> is not installed: its
/// <c>BasicTokenizer(do_lower_case=True, tokenize_chinese_chars=True, strip_accents=False, do_split_on_punc=False)</c>,
/// whose output words are joined with single spaces.
/// </summary>
internal static class ClipTextCleaner
{
    private const int CapitalIWithDot = 0x0130;
    private const int CapitalSigma = 0x03A3;

    /// <summary>Cleans <paramref name="text"/> the way <c>" ".join(BasicTokenizer(...).tokenize(text))</c> does.</summary>
    public static string Clean(string text)
    {
        // 1. _clean_text: drop NUL, U+FFFD and control/format characters (Cc, Cf) other than \t \n \r; whitespace
        //    (\t \n \r space, or category Zs) becomes a space.
        var cleaned = new StringBuilder(text.Length + 8);
        foreach (var rune in text.EnumerateRunes())
        {
            var cp = rune.Value;
            if (cp == 0 || cp == 0xFFFD || IsControl(rune))
            {
                continue;
            }
            if (IsBasicWhitespace(rune))
            {
                cleaned.Append(' ');
            }
            else if (IsCjk(cp))
            {
                // 2. _tokenize_chinese_chars: spaces around every CJK ideograph.
                cleaned.Append(' ');
                cleaned.Append(rune.ToString());
                cleaned.Append(' ');
            }
            else
            {
                cleaned.Append(rune.ToString());
            }
        }

        // 3. NFC, 4. split on whitespace (Python's str.split()), 5. lower-case each word (Python's str.lower()),
        // 6. join with single spaces.
        var normalized = cleaned.ToString().Normalize(NormalizationForm.FormC);
        var words = SplitOnWhitespace(normalized);
        var output = new StringBuilder(normalized.Length);
        foreach (var word in words)
        {
            if (output.Length > 0)
            {
                output.Append(' ');
            }
            AppendLower(output, word);
        }
        return output.ToString();
    }

    /// <summary>transformers' <c>_is_control</c>: category Cc or Cf, except tab, newline and carriage return.</summary>
    private static bool IsControl(Rune rune)
    {
        if (rune.Value is '\t' or '\n' or '\r')
        {
            return false;
        }
        var category = Rune.GetUnicodeCategory(rune);
        return category is UnicodeCategory.Control or UnicodeCategory.Format;
    }

    /// <summary>transformers' <c>_is_whitespace</c>: space, tab, newline, carriage return, or category Zs.</summary>
    private static bool IsBasicWhitespace(Rune rune) =>
        rune.Value is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(rune) == UnicodeCategory.SpaceSeparator;

    /// <summary>The CJK blocks of BERT's <c>_is_chinese_char</c>.</summary>
    private static bool IsCjk(int cp) =>
        (cp >= 0x4E00 && cp <= 0x9FFF)
        || (cp >= 0x3400 && cp <= 0x4DBF)
        || (cp >= 0x20000 && cp <= 0x2A6DF)
        || (cp >= 0x2A700 && cp <= 0x2B73F)
        || (cp >= 0x2B740 && cp <= 0x2B81F)
        || (cp >= 0x2B820 && cp <= 0x2CEAF)
        || (cp >= 0xF900 && cp <= 0xFAFF)
        || (cp >= 0x2F800 && cp <= 0x2FA1F);

    /// <summary>
    /// Python's <c>str.split()</c> with no argument: runs of whitespace separate words, leading and trailing
    /// whitespace is dropped. After step 1 the only whitespace left is the space and U+2028/U+2029, which both
    /// Python's <c>str.isspace</c> and <see cref="Rune.IsWhiteSpace"/> count as whitespace.
    /// </summary>
    private static List<string> SplitOnWhitespace(string text)
    {
        var words = new List<string>();
        var start = -1;
        var index = 0;
        foreach (var rune in text.EnumerateRunes())
        {
            if (Rune.IsWhiteSpace(rune))
            {
                if (start >= 0)
                {
                    words.Add(text[start..index]);
                    start = -1;
                }
            }
            else if (start < 0)
            {
                start = index;
            }
            index += rune.Utf16SequenceLength;
        }
        if (start >= 0)
        {
            words.Add(text[start..]);
        }
        return words;
    }

    /// <summary>
    /// Python's <c>str.lower()</c>: the invariant lower-case mapping of each code point, plus the two rules where
    /// Python's full case mapping differs from a one-to-one mapping: U+0130 (İ) becomes "i̇" (i + U+0307), and
    /// capital sigma becomes final sigma (ς) after a cased letter and not before one (case-ignorable characters
    /// between are skipped).
    /// </summary>
    private static void AppendLower(StringBuilder output, string word)
    {
        var runes = word.EnumerateRunes().ToArray();
        for (var i = 0; i < runes.Length; i++)
        {
            var rune = runes[i];
            if (rune.Value == CapitalIWithDot)
            {
                output.Append("i\u0307");
            }
            else if (rune.Value == CapitalSigma)
            {
                output.Append(IsFinalSigma(runes, i) ? '\u03C2' : '\u03C3');
            }
            else
            {
                output.Append(Rune.ToLowerInvariant(rune).ToString());
            }
        }
    }

    private static bool IsFinalSigma(Rune[] runes, int position)
    {
        var before = position - 1;
        while (before >= 0 && IsCaseIgnorable(runes[before]))
        {
            before--;
        }
        if (before < 0 || !IsCased(runes[before]))
        {
            return false;
        }
        var after = position + 1;
        while (after < runes.Length && IsCaseIgnorable(runes[after]))
        {
            after++;
        }
        return after == runes.Length || !IsCased(runes[after]);
    }

    private static bool IsCased(Rune rune) =>
        Rune.GetUnicodeCategory(rune) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter;

    private static bool IsCaseIgnorable(Rune rune) =>
        Rune.GetUnicodeCategory(rune) is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format
            or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol
        || rune.Value is '\'' or '.' or ':' or '\u00B7' or '\u2018' or '\u2019' or '\u2024' or '\u2027' or '\uFE13' or '\uFE52' or '\uFE55' or '\uFF07' or '\uFF0E' or '\uFF1A';
}
