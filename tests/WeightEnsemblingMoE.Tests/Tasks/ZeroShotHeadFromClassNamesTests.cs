using System.Text.Json;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Clip;
using WeightEnsembling.Text;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Tasks;

/// <summary>
/// Zero-shot heads built from a CLIP text tower as FusionBench builds them, checked against
/// tools/fixtures/clip_text_reference.py (its tokenised prompts come from the independent tokenizer of
/// tools/fixtures/clip_tokenizer_reference.py over the committed tokenizer fixture).
/// </summary>
[TestFixture, NonParallelizable]
public sealed class ZeroShotHeadFromClassNamesTests
{
    private static string TokenizerFolder(string layout) =>
        Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Text", "clip_tokenizer", layout);

    private static (string[] ClassNames, string[] Templates, long[][] InputIds) ZeroShotCase()
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(ClipModelTests.Fixture("clip_zeroshot"), "zeroshot.json")));
        var root = json.RootElement;
        return (
            root.GetProperty("class_names").EnumerateArray().Select(e => e.GetString()!).ToArray(),
            root.GetProperty("templates").EnumerateArray().Select(e => e.GetString()!).ToArray(),
            root.GetProperty("input_ids").EnumerateArray().Select(r => r.EnumerateArray().Select(e => e.GetInt64()).ToArray()).ToArray());
    }

    private static void AssertHeadMatches(ZeroShotClassificationHead head, ClipModel clip, string fixture)
    {
        using var scope = NewDisposeScope();
        using var expected = SafeTensorsFile.Open(Path.Combine(ClipModelTests.Fixture(fixture), "expected.safetensors"));
        using var inputs = SafeTensorsFile.Open(Path.Combine(ClipModelTests.Fixture(fixture), "inputs.safetensors"));
        var image = clip.GetImageFeatures(inputs.Load("pixel_values"));

        Assert.Multiple(() =>
        {
            ClipModelTests.AssertClose(head.TextEmbeddings, expected.Load("head_text_embeds"), "head_text_embeds");
            ClipModelTests.AssertClose(head.forward(image), expected.Load("head_logits"), "head_logits");
            Assert.That(head.LogitScale.item<float>(), Is.EqualTo(clip.LogitScale.item<float>()), "logit_scale (the logarithm)");
        });
    }

    [TestCase(64)]
    [TestCase(4)]
    public void FromTokenIds_TinyClip_MatchesPyTorchReference(int batchSize)
    {
        using var clip = ClipModel.FromPretrained(ClipModelTests.Fixture("clip_text"));
        using var inputs = SafeTensorsFile.Open(Path.Combine(ClipModelTests.Fixture("clip_text"), "inputs.safetensors"));
        using var ids = inputs.Load("head_input_ids");
        using var mask = inputs.Load("head_attention_mask");

        using var head = ZeroShotClassificationHead.FromTokenIds(clip, ids, mask, classCount: 3, templateCount: 2, ["a", "b", "c"], batchSize);

        Assert.That(head.ClassCount, Is.EqualTo(3));
        Assert.That(head.ClassNames, Is.EqualTo(new[] { "a", "b", "c" }));
        Assert.That(head.TextEmbeddings.requires_grad, Is.False);
        AssertHeadMatches(head, clip, "clip_text");
    }

    [TestCase("slow", 64)]
    [TestCase("fast", 64)]
    [TestCase("slow", 4)]
    public void FromClassNames_WithTokenizer_MatchesPyTorchReference(string layout, int batchSize)
    {
        var (classNames, templates, _) = ZeroShotCase();
        using var clip = ClipModel.FromPretrained(ClipModelTests.Fixture("clip_zeroshot"));
        var tokenizer = ClipTokenizer.FromPretrained(TokenizerFolder(layout));

        using var head = ZeroShotClassificationHead.FromClassNames(clip, tokenizer, classNames, templates, batchSize);

        Assert.That(head.ClassNames, Is.EqualTo(classNames));
        AssertHeadMatches(head, clip, "clip_zeroshot");
    }

    [Test]
    public void FromClassNames_Prompts_TokeniseAsTheReference()
    {
        // Pins the fixture's premise: the .NET tokenizer gives the reference tokenizer's ids for these prompts.
        var (classNames, templates, expectedIds) = ZeroShotCase();
        var tokenizer = ClipTokenizer.FromPretrained(TokenizerFolder("slow"));
        var prompts = classNames.SelectMany(c => templates.Select(t => t.Replace("{}", c, StringComparison.Ordinal))).ToArray();

        using var ids = tokenizer.EncodeBatch(prompts, out var mask);
        mask.Dispose();

        Assert.That(ids.data<long>().ToArray(), Is.EqualTo(expectedIds.SelectMany(r => r).ToArray()));
    }

    [Test]
    public void FromClassNames_TemplateWithoutPlaceholder_ThrowsNamingTemplate()
    {
        using var clip = ClipModel.FromPretrained(ClipModelTests.Fixture("clip_zeroshot"));
        var tokenizer = ClipTokenizer.FromPretrained(TokenizerFolder("slow"));

        var e = Assert.Throws<ArgumentException>(() =>
            ZeroShotClassificationHead.FromClassNames(clip, tokenizer, ["cat"], ["a photo of a {}.", "a photo"]));

        Assert.That(e!.ParamName, Is.EqualTo("templates"));
        Assert.That(e.Message, Does.Contain("\"a photo\""));
    }

    [Test]
    public void FromClassNames_EmptyClassNames_Throws()
    {
        using var clip = ClipModel.FromPretrained(ClipModelTests.Fixture("clip_zeroshot"));
        var tokenizer = ClipTokenizer.FromPretrained(TokenizerFolder("slow"));

        var e = Assert.Throws<ArgumentException>(() => ZeroShotClassificationHead.FromClassNames(clip, tokenizer, [], ["{}"]));

        Assert.That(e!.ParamName, Is.EqualTo("classNames"));
    }

    [Test]
    public void FromClassNames_TokenizerOfAnotherVocabulary_Throws()
    {
        using var clip = ClipModel.FromPretrained(ClipModelTests.Fixture("clip_text")); // vocab_size 64, tokenizer 934
        var tokenizer = ClipTokenizer.FromPretrained(TokenizerFolder("slow"));

        Assert.Throws<InvalidDataException>(() => ZeroShotClassificationHead.FromClassNames(clip, tokenizer, ["cat"], ["{}"]));
    }

    [Test]
    public void FromTokenIds_RowCountNotClassesTimesTemplates_ThrowsNamingInputIds()
    {
        using var clip = ClipModel.FromPretrained(ClipModelTests.Fixture("clip_text"));
        using var ids = torch.zeros(5, 4, ScalarType.Int64);

        var e = Assert.Throws<ArgumentException>(() => ZeroShotClassificationHead.FromTokenIds(clip, ids, null, 3, 2));

        Assert.That(e!.ParamName, Is.EqualTo("inputIds"));
    }
}
