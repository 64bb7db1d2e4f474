using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using WeightEnsembling.Text;

namespace WeightEnsembling.Tests.Text;

/// <summary>
/// ClipTokenizer against tools/fixtures/clip_tokenizer_reference.py: an independent Python implementation of CLIP's
/// BPE (with transformers' no-ftfy clean-up) over a 934-token vocabulary it trained, written both as vocab.json +
/// merges.txt and as tokenizer.json, and the expected ids of 249 strings.
/// </summary>
[NonParallelizable]
public sealed class ClipTokenizerTests
{
    private static readonly string Root = Path.Combine(AppContext.BaseDirectory, "Fixtures", "Text", "clip_tokenizer");
    private static readonly string SlowFolder = Path.Combine(Root, "slow");
    private static readonly string FastFolder = Path.Combine(Root, "fast");

    private static JsonElement Expected()
    {
        using var document = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "expected.json")));
        return document.RootElement.Clone();
    }

    private static IEnumerable<(string Text, int[] Ids, int Untruncated)> Cases() =>
        Expected().GetProperty("cases").EnumerateArray().Select(c => (
            c.GetProperty("text").GetString()!,
            c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            c.GetProperty("untruncated_count").GetInt32()));

    private static void AssertAllCasesMatch(ClipTokenizer tokenizer)
    {
        var failures = new List<string>();
        var count = 0;
        foreach (var (text, ids, _) in Cases())
        {
            count++;
            var actual = tokenizer.Encode(text);
            if (!actual.SequenceEqual(ids))
            {
                failures.Add($"{JsonSerializer.Serialize(text)}: expected [{string.Join(", ", ids)}], got [{string.Join(", ", actual)}]");
            }
        }
        Assert.That(count, Is.GreaterThanOrEqualTo(200));
        Assert.That(failures, Is.Empty, $"{failures.Count} of {count} strings differ:\n" + string.Join("\n", failures.Take(20)));
    }

    private static string CopyFolder(string source)
    {
        var folder = Directory.CreateTempSubdirectory("wemoe-cliptok").FullName;
        foreach (var file in Directory.GetFiles(source))
        {
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        }
        return folder;
    }

    [Test]
    public void Encode_SlowTokenizerFiles_MatchesReferenceForEveryString()
    {
        AssertAllCasesMatch(ClipTokenizer.FromPretrained(SlowFolder));
    }

    [Test]
    public void Encode_TokenizerJson_MatchesReferenceForEveryString()
    {
        AssertAllCasesMatch(ClipTokenizer.FromPretrained(FastFolder));
    }

    [Test]
    public void Encode_TokenizerJsonWithPairMerges_GivesTheSameIds()
    {
        var folder = CopyFolder(FastFolder);
        try
        {
            var path = Path.Combine(folder, "tokenizer.json");
            var root = JsonNode.Parse(File.ReadAllText(path))!;
            var merges = root["model"]!["merges"]!.AsArray();
            var pairs = new JsonArray(merges.Select(m => (JsonNode)new JsonArray(m!.GetValue<string>().Split(' ').Select(s => (JsonNode)JsonValue.Create(s)!).ToArray())).ToArray());
            root["model"]!["merges"] = pairs;
            File.WriteAllText(path, root.ToJsonString());
            AssertAllCasesMatch(ClipTokenizer.FromPretrained(folder));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_BothLayouts_GiveIdenticalIdsAndProperties()
    {
        var slow = ClipTokenizer.FromPretrained(SlowFolder);
        var fast = ClipTokenizer.FromPretrained(FastFolder);
        Assert.That(fast.VocabSize, Is.EqualTo(slow.VocabSize));
        Assert.That(fast.BosTokenId, Is.EqualTo(slow.BosTokenId));
        Assert.That(fast.EosTokenId, Is.EqualTo(slow.EosTokenId));
        Assert.That(fast.PadTokenId, Is.EqualTo(slow.PadTokenId));
        foreach (var (text, _, _) in Cases())
        {
            Assert.That(fast.Encode(text), Is.EqualTo(slow.Encode(text)), JsonSerializer.Serialize(text));
        }
    }

    [Test]
    public void FromPretrained_ReadsSpecialTokensAndContextLengthFromTheFiles()
    {
        var expected = Expected();
        var tokenizer = ClipTokenizer.FromPretrained(SlowFolder);
        Assert.That(tokenizer.VocabSize, Is.EqualTo(expected.GetProperty("vocab_size").GetInt32()));
        Assert.That(tokenizer.BosTokenId, Is.EqualTo(expected.GetProperty("bos_id").GetInt32()));
        Assert.That(tokenizer.EosTokenId, Is.EqualTo(expected.GetProperty("eos_id").GetInt32()));
        Assert.That(tokenizer.PadTokenId, Is.EqualTo(expected.GetProperty("pad_id").GetInt32()));
        Assert.That(tokenizer.ContextLength, Is.EqualTo(77));
        Assert.That(tokenizer.Encode(""), Is.EqualTo(new[] { tokenizer.BosTokenId, tokenizer.EosTokenId }));
    }

    [Test]
    public void FromPretrained_WithoutConfigFiles_UsesClipDefaults()
    {
        var folder = CopyFolder(SlowFolder);
        try
        {
            File.Delete(Path.Combine(folder, "tokenizer_config.json"));
            File.Delete(Path.Combine(folder, "special_tokens_map.json"));
            var tokenizer = ClipTokenizer.FromPretrained(folder);
            var reference = ClipTokenizer.FromPretrained(SlowFolder);
            Assert.That(tokenizer.ContextLength, Is.EqualTo(77));
            Assert.That(tokenizer.PadTokenId, Is.EqualTo(tokenizer.EosTokenId));
            Assert.That(tokenizer.BosTokenId, Is.EqualTo(reference.BosTokenId));
            Assert.That(tokenizer.EosTokenId, Is.EqualTo(reference.EosTokenId));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_PadTokenFromSpecialTokensMap_IsUsedForPadding()
    {
        var folder = CopyFolder(SlowFolder);
        try
        {
            var vocab = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "vocab.json")))!;
            var bangId = vocab["!"]!.GetValue<int>();
            File.WriteAllText(Path.Combine(folder, "special_tokens_map.json"), "{\"pad_token\": \"!\"}");
            var tokenizer = ClipTokenizer.FromPretrained(folder);
            Assert.That(tokenizer.PadTokenId, Is.EqualTo(bangId));
            using var ids = tokenizer.EncodeBatch(["a"], out var mask);
            using var _ = mask;
            Assert.That(ids[0, 5].item<long>(), Is.EqualTo(bangId));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void Encode_LongText_KeepsStartTheFirstContextMinusTwoIdsAndEnd()
    {
        var tokenizer = ClipTokenizer.FromPretrained(SlowFolder);
        var truncated = Cases().Where(c => c.Untruncated > 75).ToList();
        Assert.That(truncated, Has.Count.GreaterThanOrEqualTo(5));
        foreach (var (text, ids, _) in truncated)
        {
            var actual = tokenizer.Encode(text);
            Assert.That(actual, Has.Count.EqualTo(77));
            Assert.That(actual[0], Is.EqualTo(tokenizer.BosTokenId));
            Assert.That(actual[76], Is.EqualTo(tokenizer.EosTokenId));
            Assert.That(actual, Is.EqualTo(ids));
        }
    }

    [Test]
    public void Encode_WithSmallerContextLength_TruncatesToIt()
    {
        var full = ClipTokenizer.FromPretrained(SlowFolder);
        var short8 = ClipTokenizer.FromPretrained(SlowFolder, contextLength: 8);
        Assert.That(short8.ContextLength, Is.EqualTo(8));
        const string text = "a photo of the airport terminal, a type of scene.";
        var all = full.Encode(text);
        Assert.That(all.Count, Is.GreaterThan(8));
        var cut = short8.Encode(text);
        Assert.That(cut, Is.EqualTo(all.Take(7).Append(short8.EosTokenId)));
    }

    [Test]
    public void EncodeBatch_PadsWithPadTokenAndMasksPadding()
    {
        var tokenizer = ClipTokenizer.FromPretrained(SlowFolder);
        string[] texts = ["a photo of a cat.", "", "a " + string.Join(" ", Enumerable.Repeat("photo", 100))];
        using var ids = tokenizer.EncodeBatch(texts, out var mask);
        using var maskScope = mask;
        Assert.That(ids.dtype, Is.EqualTo(torch.ScalarType.Int64));
        Assert.That(mask.dtype, Is.EqualTo(torch.ScalarType.Int64));
        Assert.That(ids.shape, Is.EqualTo(new long[] { 3, 77 }));
        Assert.That(mask.shape, Is.EqualTo(new long[] { 3, 77 }));
        var idValues = ids.data<long>().ToArray();
        var maskValues = mask.data<long>().ToArray();
        for (var row = 0; row < texts.Length; row++)
        {
            var encoded = tokenizer.Encode(texts[row]);
            for (var column = 0; column < 77; column++)
            {
                var index = row * 77 + column;
                if (column < encoded.Count)
                {
                    Assert.That(idValues[index], Is.EqualTo(encoded[column]));
                    Assert.That(maskValues[index], Is.EqualTo(1));
                }
                else
                {
                    Assert.That(idValues[index], Is.EqualTo(tokenizer.PadTokenId));
                    Assert.That(maskValues[index], Is.EqualTo(0));
                }
            }
        }
        Assert.That(maskValues.Skip(77).Take(77).Sum(), Is.EqualTo(2));
        Assert.That(maskValues.Skip(154).Sum(), Is.EqualTo(77));
    }

    [Test]
    public void CheckAgainst_MatchingSizePasses_OtherSizeNamesTheVocabularyFile()
    {
        var tokenizer = ClipTokenizer.FromPretrained(SlowFolder);
        Assert.DoesNotThrow(() => tokenizer.CheckAgainst(tokenizer.VocabSize));
        var ex = Assert.Throws<InvalidDataException>(() => tokenizer.CheckAgainst(49408));
        Assert.That(ex!.Message, Does.Contain("vocab.json").And.Contain("49408").And.Contain(tokenizer.VocabSize.ToString()));
        var fast = ClipTokenizer.FromPretrained(FastFolder);
        var fastEx = Assert.Throws<InvalidDataException>(() => fast.CheckAgainst(49408));
        Assert.That(fastEx!.Message, Does.Contain("tokenizer.json"));
    }

    [Test]
    public void FromPretrained_MissingFolder_Throws()
    {
        var missing = Path.Combine(Path.GetTempPath(), "wemoe-no-such-tokenizer-" + Guid.NewGuid().ToString("N"));
        var ex = Assert.Throws<DirectoryNotFoundException>(() => ClipTokenizer.FromPretrained(missing));
        Assert.That(ex!.Message, Does.Contain(missing));
    }

    [Test]
    public void FromPretrained_MissingMergesFile_NamesIt()
    {
        var folder = CopyFolder(SlowFolder);
        try
        {
            File.Delete(Path.Combine(folder, "merges.txt"));
            var ex = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromPretrained(folder));
            Assert.That(ex!.Message, Does.Contain("merges.txt").And.Contain("tokenizer.json").And.Contain(folder));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_EmptyFolder_NamesTheFilesItNeeds()
    {
        var folder = Directory.CreateTempSubdirectory("wemoe-cliptok").FullName;
        try
        {
            var ex = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromPretrained(folder));
            Assert.That(ex!.Message, Does.Contain("vocab.json and merges.txt"));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_VocabWithoutStartToken_NamesFileAndToken()
    {
        var folder = CopyFolder(SlowFolder);
        try
        {
            var path = Path.Combine(folder, "vocab.json");
            var vocab = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            vocab.Remove("<|startoftext|>");
            File.WriteAllText(path, vocab.ToJsonString());
            var ex = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromPretrained(folder));
            Assert.That(ex!.Message, Does.Contain("vocab.json").And.Contain("<|startoftext|>").And.Contain("bos_token"));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_TokenizerJsonWithoutEndToken_NamesFileAndToken()
    {
        var folder = CopyFolder(FastFolder);
        try
        {
            var path = Path.Combine(folder, "tokenizer.json");
            var root = JsonNode.Parse(File.ReadAllText(path))!;
            root["model"]!["vocab"]!.AsObject().Remove("<|endoftext|>");
            var added = root["added_tokens"]!.AsArray();
            added.RemoveAt(added.Count - 1);
            File.WriteAllText(path, root.ToJsonString());
            var ex = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromPretrained(folder));
            Assert.That(ex!.Message, Does.Contain("tokenizer.json").And.Contain("<|endoftext|>"));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_MalformedMergesLine_NamesFileAndLineNumber()
    {
        var folder = CopyFolder(SlowFolder);
        try
        {
            var path = Path.Combine(folder, "merges.txt");
            var lines = File.ReadAllLines(path);
            lines[4] = "abc";
            File.WriteAllLines(path, lines);
            var ex = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromPretrained(folder));
            Assert.That(ex!.Message, Does.Contain("merges.txt").And.Contain("line 5").And.Contain("'abc'"));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_MergeOutsideVocabulary_NamesFileAndLineNumber()
    {
        var folder = CopyFolder(SlowFolder);
        try
        {
            var path = Path.Combine(folder, "merges.txt");
            var lines = File.ReadAllLines(path).ToList();
            lines.Add("q z</w>");
            File.WriteAllLines(path, lines);
            var ex = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromPretrained(folder));
            Assert.That(ex!.Message, Does.Contain("merges.txt").And.Contain($"line {lines.Count}").And.Contain("qz</w>"));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_VocabWithoutAByteSymbol_NamesFileAndSymbol()
    {
        var folder = CopyFolder(SlowFolder);
        try
        {
            var path = Path.Combine(folder, "vocab.json");
            var vocab = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            vocab.Remove("~</w>");
            File.WriteAllText(path, vocab.ToJsonString());
            var ex = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromPretrained(folder));
            Assert.That(ex!.Message, Does.Contain("vocab.json").And.Contain("'~</w>'"));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_InvalidJson_NamesTheFile()
    {
        var folder = CopyFolder(SlowFolder);
        try
        {
            File.WriteAllText(Path.Combine(folder, "vocab.json"), "{\"a\": 1,");
            var ex = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromPretrained(folder));
            Assert.That(ex!.Message, Does.Contain("vocab.json").And.Contain("not valid JSON"));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_TokenizerJsonWithOtherSuffix_IsRejected()
    {
        var folder = CopyFolder(FastFolder);
        try
        {
            var path = Path.Combine(folder, "tokenizer.json");
            var root = JsonNode.Parse(File.ReadAllText(path))!;
            root["model"]!["end_of_word_suffix"] = "";
            File.WriteAllText(path, root.ToJsonString());
            var ex = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromPretrained(folder));
            Assert.That(ex!.Message, Does.Contain("tokenizer.json").And.Contain("end_of_word_suffix"));
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Test]
    public void FromPretrained_ContextLengthBelowTwo_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ClipTokenizer.FromPretrained(SlowFolder, contextLength: 1));
    }
}
