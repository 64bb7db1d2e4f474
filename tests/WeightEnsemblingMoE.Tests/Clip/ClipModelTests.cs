using System.Text.Json.Nodes;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Clip;

/// <summary>
/// The text tower and the full CLIP model, checked against the independent PyTorch reference of
/// tools/fixtures/clip_text_reference.py (cases clip_text: eos_token_id 49; clip_legacy: eos_token_id 2).
/// </summary>
[TestFixture, NonParallelizable]
public sealed class ClipModelTests
{
    private const double Tolerance = 1e-5;
    private string _temp = null!;

    internal static string Fixture(string name) => Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Clip", name);

    [SetUp]
    public void SetUp()
    {
        _temp = Path.Combine(Path.GetTempPath(), $"clip-model-tests-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_temp);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_temp, recursive: true);

    internal static void AssertClose(Tensor actual, Tensor expected, string what)
    {
        Assert.That(actual.shape, Is.EqualTo(expected.shape), what);
        double error = (actual - expected).abs().max().item<float>();
        Assert.That(error, Is.LessThanOrEqualTo(Tolerance), what);
    }

    // TorchSharp's Tensor.equal is elementwise; this is torch.equal (same shape, dtype and every value).
    private static bool Same(Tensor a, Tensor b) =>
        a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && a.equal(b).all().item<bool>();

    private string CopyFixture(string name)
    {
        string target = Path.Combine(_temp, name);
        Directory.CreateDirectory(target);
        foreach (string file in Directory.GetFiles(Fixture(name)))
        {
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
        }

        return target;
    }

    private static void RewriteWeights(string folder, Action<Dictionary<string, Tensor>> edit)
    {
        string path = Path.Combine(folder, "model.safetensors");
        Dictionary<string, Tensor> tensors;
        using (var file = SafeTensorsFile.Open(path))
        {
            tensors = file.LoadAll();
        }

        edit(tensors);
        SafeTensorsWriter.Save(path, tensors);
        foreach (var tensor in tensors.Values)
        {
            tensor.Dispose();
        }
    }

    private static void RewriteConfig(string folder, Action<JsonObject> edit)
    {
        string path = Path.Combine(folder, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    private static void AssertTextMatches(Func<Tensor, Tensor?, ClipTextOutput> run, string fixture)
    {
        using var scope = torch.NewDisposeScope();
        using var inputs = SafeTensorsFile.Open(Path.Combine(Fixture(fixture), "inputs.safetensors"));
        using var expected = SafeTensorsFile.Open(Path.Combine(Fixture(fixture), "expected.safetensors"));

        var plain = run(inputs.Load("input_ids"), null);
        var padded = run(inputs.Load("padded_input_ids"), inputs.Load("padded_attention_mask"));

        Assert.Multiple(() =>
        {
            AssertClose(plain.LastHiddenState, expected.Load("last_hidden_state"), "last_hidden_state");
            AssertClose(plain.PooledOutput, expected.Load("pooled_output"), "pooled_output");
            AssertClose(plain.TextEmbeds!, expected.Load("text_embeds"), "text_embeds");
            AssertClose(padded.LastHiddenState, expected.Load("padded_last_hidden_state"), "padded_last_hidden_state");
            AssertClose(padded.PooledOutput, expected.Load("padded_pooled_output"), "padded_pooled_output");
            AssertClose(padded.TextEmbeds!, expected.Load("padded_text_embeds"), "padded_text_embeds");
        });
    }

    [TestCase("clip_text")]
    [TestCase("clip_legacy")]
    public void FromPretrained_TextTower_MatchesPyTorchReference(string fixture)
    {
        using var model = ClipModel.FromPretrained(Fixture(fixture));

        AssertTextMatches((ids, mask) => model.TextModel.forward(ids, mask), fixture);
    }

    [TestCase("clip_text")]
    [TestCase("clip_legacy")]
    public void FromPretrained_ImageFeaturesAndLogits_MatchPyTorchReference(string fixture)
    {
        using var model = ClipModel.FromPretrained(Fixture(fixture));
        using var scope = torch.NewDisposeScope();
        using var inputs = SafeTensorsFile.Open(Path.Combine(Fixture(fixture), "inputs.safetensors"));
        using var expected = SafeTensorsFile.Open(Path.Combine(Fixture(fixture), "expected.safetensors"));
        var pixels = inputs.Load("pixel_values");

        using var output = model.forward(inputs.Load("padded_input_ids"), pixels, inputs.Load("padded_attention_mask"));

        Assert.Multiple(() =>
        {
            AssertClose(model.GetImageFeatures(pixels), expected.Load("image_embeds"), "image_embeds");
            AssertClose(
                model.GetTextFeatures(inputs.Load("padded_input_ids"), inputs.Load("padded_attention_mask")),
                expected.Load("padded_text_embeds"),
                "text features");
            AssertClose(output.LogitsPerImage, expected.Load("logits_per_image"), "logits_per_image");
            AssertClose(output.LogitsPerText, expected.Load("logits_per_text"), "logits_per_text");
            Assert.That(output.ImageEmbeds.norm(1).sub(1).abs().max().item<float>(), Is.LessThan(1e-6), "image_embeds are unit length");
        });
    }

    [Test]
    public void FromPretrained_LegacyAndNewEosRules_PoolDifferentPositions()
    {
        // In clip_text (eos 49) the first text has a larger id (63) after its eos: the legacy rule would pool there.
        using var model = ClipModel.FromPretrained(Fixture("clip_text"));
        using var scope = torch.NewDisposeScope();
        using var inputs = SafeTensorsFile.Open(Path.Combine(Fixture("clip_text"), "inputs.safetensors"));
        var ids = inputs.Load("input_ids");
        var output = model.TextModel.forward(ids);

        Assert.That(model.Config.TextConfig.UsesLegacyEosPooling, Is.False);
        AssertClose(output.PooledOutput[0], output.LastHiddenState[0, 4], "first eos at position 4");
        AssertClose(output.PooledOutput[2], output.LastHiddenState[2, 0], "no eos: position 0, as transformers");
        Assert.That((output.PooledOutput[0] - output.LastHiddenState[0, 5]).abs().max().item<float>(), Is.GreaterThan(1e-3));
    }

    [Test]
    public void TextModelFromPretrained_FullClipFolder_LoadsTextPartAndMatchesReference()
    {
        using var model = ClipTextModel.FromPretrained(Fixture("clip_text"));

        Assert.That(model.HasProjection, Is.True);
        Assert.That(model.Config.EosTokenId, Is.EqualTo(49));
        Assert.That(model.state_dict().Keys, Has.All.StartsWith("text_"));
        AssertTextMatches((ids, mask) => model.forward(ids, mask), "clip_text");
    }

    [Test]
    public void VisionModelFromPretrained_FullClipFolder_StillLoadsImageTower()
    {
        using var vision = ClipVisionModel.FromPretrained(Fixture("clip_legacy"));
        using var scope = torch.NewDisposeScope();
        using var inputs = SafeTensorsFile.Open(Path.Combine(Fixture("clip_legacy"), "inputs.safetensors"));
        using var expected = SafeTensorsFile.Open(Path.Combine(Fixture("clip_legacy"), "expected.safetensors"));

        AssertClose(vision.GetImageFeatures(inputs.Load("pixel_values")), expected.Load("image_embeds"), "image_embeds");
    }

    [Test]
    public void StateDict_Keys_EqualTheHuggingFaceCheckpointKeys()
    {
        using var model = ClipModel.FromPretrained(Fixture("clip_text"));
        using var file = SafeTensorsFile.Open(Path.Combine(Fixture("clip_text"), "model.safetensors"));
        var keys = model.state_dict().Keys.ToList();

        Assert.That(keys, Is.EquivalentTo(file.Names));
        Assert.That(keys, Is.Unique);
        // text: 2 embeddings + 16 per layer + 2 final_layer_norm; vision: 3 + 2 + 16 per layer + 2; 2 projections; logit_scale.
        Assert.That(keys, Has.Count.EqualTo((2 + 16 * 2 + 2) + (3 + 2 + 16 * 2 + 2) + 2 + 1));
        Assert.That(keys, Does.Contain("text_model.embeddings.token_embedding.weight")
            .And.Contain("text_model.embeddings.position_embedding.weight")
            .And.Contain("text_model.encoder.layers.1.self_attn.k_proj.bias")
            .And.Contain("text_model.encoder.layers.0.mlp.fc1.weight")
            .And.Contain("text_model.final_layer_norm.weight")
            .And.Contain("text_projection.weight")
            .And.Contain("visual_projection.weight")
            .And.Contain("logit_scale")
            .And.Contain("vision_model.pre_layrnorm.bias"));
        Assert.That(keys, Has.None.Contains("position_ids").And.None.EqualTo("text_projection.bias"));
    }

    [Test]
    public void VisionModel_SharesTheImageTower()
    {
        using var model = new ClipModel(TinyConfig());
        var vision = model.VisionModel;
        using var pixels = torch.randn(2, 3, 8, 8);

        Assert.That(vision.state_dict().Keys, Is.EquivalentTo(model.state_dict().Keys.Where(k => k.StartsWith("vision_model.") || k == "visual_projection.weight")));
        using (torch.no_grad())
        {
            vision.VisualProjection!.weight!.mul_(2);
        }

        using var a = model.GetImageFeatures(pixels);
        using var b = vision.GetImageFeatures(pixels);
        Assert.That(Same(a, b), Is.True);
        Assert.That(Same(model.state_dict()["visual_projection.weight"], vision.state_dict()["visual_projection.weight"]), Is.True);
    }

    [Test]
    public void To_Float64_KeepsTheKeysAndTheSharedTowers()
    {
        using var model = new ClipModel(TinyConfig());
        var keys = model.state_dict().Keys.ToList();

        model.to(ScalarType.Float64);

        Assert.That(model.state_dict().Keys, Is.EqualTo(keys));
        Assert.That(model.state_dict().Values.Select(t => t.dtype), Has.All.EqualTo(ScalarType.Float64));
        Assert.That(model.LogitScale.dtype, Is.EqualTo(ScalarType.Float64));
        Assert.That(model.VisionModel.VisualProjection!.weight!.dtype, Is.EqualTo(ScalarType.Float64));
        using var pixels = torch.randn(1, 3, 8, 8, ScalarType.Float64);
        using var ids = torch.tensor(new long[] { 48, 5, 49 }).view(1, 3);
        using var output = model.forward(ids, pixels);
        Assert.That(output.LogitsPerImage.dtype, Is.EqualTo(ScalarType.Float64));
    }

    [Test]
    public void Constructor_LogitScale_StartsAtInitValue()
    {
        using var model = new ClipModel(TinyConfig());

        Assert.That(model.LogitScale.item<float>(), Is.EqualTo(2.6592f));
        Assert.That(model.LogitScale.shape, Is.Empty);
    }

    [Test]
    public void SaveTo_ThenFromPretrained_IsBitIdentical()
    {
        using var original = ClipModel.FromPretrained(Fixture("clip_legacy"));
        string first = Path.Combine(_temp, "first");
        string second = Path.Combine(_temp, "second");
        original.SaveTo(first);

        using var reloaded = ClipModel.FromPretrained(first);
        reloaded.SaveTo(second);

        Assert.That(reloaded.Config, Is.EqualTo(original.Config));
        var a = original.state_dict();
        var b = reloaded.state_dict();
        Assert.That(b.Keys, Is.EquivalentTo(a.Keys));
        Assert.That(a.Keys.Where(k => !Same(a[k], b[k])), Is.Empty);
        Assert.That(File.ReadAllBytes(Path.Combine(second, "model.safetensors")), Is.EqualTo(File.ReadAllBytes(Path.Combine(first, "model.safetensors"))));
        Assert.That(File.ReadAllText(Path.Combine(second, "config.json")), Is.EqualTo(File.ReadAllText(Path.Combine(first, "config.json"))));
        Assert.That(Directory.GetFiles(first).Select(Path.GetFileName), Is.EquivalentTo(new[] { "config.json", "model.safetensors" }));
    }

    [Test]
    public void TextModelSaveTo_ThenFromPretrained_IsBitIdentical()
    {
        using var original = ClipTextModel.FromPretrained(Fixture("clip_text"));
        original.SaveTo(_temp);

        using var reloaded = ClipTextModel.FromPretrained(_temp);

        Assert.That(reloaded.Config, Is.EqualTo(original.Config));
        var a = original.state_dict();
        var b = reloaded.state_dict();
        Assert.That(a.Keys.Where(k => !Same(a[k], b[k])), Is.Empty);
        Assert.That(JsonNode.Parse(File.ReadAllText(Path.Combine(_temp, "config.json")))!["architectures"]![0]!.GetValue<string>(),
            Is.EqualTo("CLIPTextModelWithProjection"));
    }

    [Test]
    public void FromPretrained_MissingTextConfig_ThrowsNamingIt()
    {
        string folder = CopyFixture("clip_text");
        RewriteConfig(folder, c => c.Remove("text_config"));

        var e = Assert.Throws<FormatException>(() => ClipModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain("text_config").And.Contain("config.json"));
    }

    [Test]
    public void FromPretrained_TextConfigWithoutVocabSize_ThrowsNamingTensorAndField()
    {
        // A missing key takes HF's default (49408), which disagrees with this checkpoint's 64-row token table.
        string folder = CopyFixture("clip_text");
        RewriteConfig(folder, c => c["text_config"]!.AsObject().Remove("vocab_size"));

        var e = Assert.Throws<InvalidDataException>(() => ClipModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain("text_model.embeddings.token_embedding.weight")
            .And.Contain("[49408, 32]").And.Contain("[64, 32]").And.Contain("vocab_size"));
    }

    [Test]
    public void FromPretrained_TextConfigBadHeads_ThrowsNamingField()
    {
        string folder = CopyFixture("clip_text");
        RewriteConfig(folder, c => c["text_config"]!["num_attention_heads"] = 5);

        var e = Assert.Throws<ArgumentException>(() => ClipModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain("text_config").And.Contain("num_attention_heads"));
    }

    [Test]
    public void FromPretrained_EosOutsideVocabulary_ThrowsNamingField()
    {
        string folder = CopyFixture("clip_text");
        RewriteConfig(folder, c => c["text_config"]!["eos_token_id"] = 64);

        var e = Assert.Throws<ArgumentException>(() => ClipTextModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain("eos_token_id"));
    }

    [Test]
    public void FromPretrained_WrongTextTensorShape_ThrowsNamingTensorAndShapes()
    {
        string folder = CopyFixture("clip_text");
        const string name = "text_model.encoder.layers.1.mlp.fc1.weight";
        RewriteWeights(folder, t => { t[name].Dispose(); t[name] = torch.zeros(48, 32); });

        var e = Assert.Throws<InvalidDataException>(() => ClipModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain(name).And.Contain("[64, 32]").And.Contain("[48, 32]").And.Contain("intermediate_size=64"));
    }

    [Test]
    public void FromPretrained_MissingLogitScale_ThrowsNamingIt()
    {
        string folder = CopyFixture("clip_text");
        RewriteWeights(folder, t => { t.Remove("logit_scale", out var p); p!.Dispose(); });

        var e = Assert.Throws<InvalidDataException>(() => ClipModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain("missing key: logit_scale"));
    }

    [Test]
    public void TextForward_MaskWithOtherValues_ThrowsNamingAttentionMask()
    {
        using var model = new ClipTextModel(TinyConfig().TextConfig);
        using var ids = torch.zeros(2, 5, ScalarType.Int64);
        using var mask = torch.full(2, 5, 2L);

        var e = Assert.Throws<ArgumentException>(() => model.forward(ids, mask));

        Assert.That(e!.Message, Does.Contain("attention_mask"));
    }

    [Test]
    public void TextForward_MaskOfWrongShape_ThrowsNamingAttentionMask()
    {
        using var model = new ClipTextModel(TinyConfig().TextConfig);
        using var ids = torch.zeros(2, 5, ScalarType.Int64);
        using var mask = torch.ones(2, 4, ScalarType.Int64);

        var e = Assert.Throws<ArgumentException>(() => model.forward(ids, mask));

        Assert.That(e!.Message, Does.Contain("attention_mask").And.Contain("[2, 4]"));
    }

    [Test]
    public void TextForward_IdOutsideVocabulary_ThrowsNamingInputIds()
    {
        using var model = new ClipTextModel(TinyConfig().TextConfig);
        using var ids = torch.tensor(new long[] { 1, 2, 50 }).view(1, 3);

        var e = Assert.Throws<ArgumentException>(() => model.forward(ids));

        Assert.That(e!.Message, Does.Contain("input_ids").And.Contain("vocab_size"));
    }

    [Test]
    public void TextForward_TooManyTokens_ThrowsNamingMaxPositions()
    {
        using var model = new ClipTextModel(TinyConfig().TextConfig);
        using var ids = torch.zeros(1, 11, ScalarType.Int64);

        var e = Assert.Throws<ArgumentException>(() => model.forward(ids));

        Assert.That(e!.Message, Does.Contain("max_position_embeddings"));
    }

    [Test]
    public void TextForward_PaddingAfterEos_DoesNotChangePooledOutput()
    {
        // Causal attention: tokens after the end-of-text token cannot reach it, masked or not.
        using var model = new ClipTextModel(TinyConfig().TextConfig);
        using var ids = torch.tensor(new long[] { 48, 3, 4, 49, 7, 7 }).view(1, 6);
        using var mask = torch.tensor(new long[] { 1, 1, 1, 1, 0, 0 }).view(1, 6);

        using var a = model.GetTextFeatures(ids);
        using var b = model.GetTextFeatures(ids, mask);

        Assert.That(a.allclose(b, rtol: 0, atol: 1e-6), Is.True);
    }

    [Test]
    public void EncoderLayerMask_WithReplacedAttentionSlot_ThrowsNotSupported()
    {
        var config = TinyConfig().TextConfig;
        using var layer = new ClipEncoderLayer(config);
        using var mlp = new ClipMlp(config.HiddenSize, 8, ClipActivation.Gelu);
        layer.SelfAttention = mlp;
        using var input = torch.randn(1, 3, config.HiddenSize);
        using var mask = torch.zeros(1, 1, 3, 3);

        Assert.Throws<NotSupportedException>(() => layer.forward(input, mask));
    }

    [Test]
    public void ClipConfig_ToJsonThenFromJson_RoundTrips()
    {
        var config = TinyConfig();

        var parsed = ClipConfig.FromJson(config.ToJson());

        Assert.That(parsed, Is.EqualTo(config));
        Assert.That(parsed.TextConfig, Is.EqualTo(config.TextConfig));
    }

    [Test]
    public void ClipConfig_TopLevelProjectionDim_WinsOverTextConfigs()
    {
        const string json = """{"projection_dim": 24, "text_config": {"projection_dim": 512}, "vision_config": {"projection_dim": 512}}""";

        var config = ClipConfig.FromJson(json);

        Assert.That(config.TextConfig.ProjectionDim, Is.EqualTo(24));
        Assert.That(config.VisionConfig.ProjectionDim, Is.EqualTo(24));
    }

    [Test]
    public void ClipTextConfig_FlatConfig_TakesDefaultsForMissingKeys()
    {
        var config = ClipTextConfig.FromJson("""{"hidden_size": 64, "num_attention_heads": 4, "eos_token_id": 2}""");

        Assert.That(config.HiddenSize, Is.EqualTo(64));
        Assert.That(config.VocabSize, Is.EqualTo(49408));
        Assert.That(config.MaxPositionEmbeddings, Is.EqualTo(77));
        Assert.That(config.UsesLegacyEosPooling, Is.True);
    }

    [Test]
    public void ClipTextConfig_VisionOnlyFullConfig_ThrowsNamingTextConfig()
    {
        var e = Assert.Throws<FormatException>(() => ClipTextConfig.FromJson("""{"vision_config": {}}"""));

        Assert.That(e!.Message, Does.Contain("text_config"));
    }

    [Test]
    public void TextModelFromPretrained_VisionOnlyFolder_ThrowsSayingSo()
    {
        var e = Assert.Throws<FormatException>(() => ClipTextModel.FromPretrained(Fixture("quick_gelu")));

        Assert.That(e!.Message, Does.Contain("clip_vision_model").And.Contain("config.json"));
    }

    [Test]
    public void ClipTextConfig_NonPositiveField_ThrowsNamingIt()
    {
        var e = Assert.Throws<ArgumentException>(() => ClipTextConfig.FromJson("""{"max_position_embeddings": 0}"""));

        Assert.That(e!.ParamName, Is.EqualTo("max_position_embeddings"));
    }

    internal static ClipConfig TinyConfig() => ClipConfig.Create(
        new ClipTextConfig
        {
            VocabSize = 50,
            HiddenSize = 8,
            IntermediateSize = 16,
            NumHiddenLayers = 2,
            NumAttentionHeads = 2,
            MaxPositionEmbeddings = 10,
            BosTokenId = 48,
            EosTokenId = 49,
            PadTokenId = 0,
        },
        ClipVisionModelTests.Tiny,
        projectionDim: 4);
}
