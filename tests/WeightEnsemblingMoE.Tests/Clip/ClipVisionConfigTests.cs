using WeightEnsembling.Clip;

namespace WeightEnsembling.Tests.Clip;

[TestFixture, NonParallelizable]
public sealed class ClipVisionConfigTests
{
    private const string VisionJson = """
        {
          "architectures": ["CLIPVisionModel"],
          "model_type": "clip_vision_model",
          "hidden_size": 1024,
          "intermediate_size": 4096,
          "num_hidden_layers": 24,
          "num_attention_heads": 16,
          "image_size": 224,
          "patch_size": 14,
          "num_channels": 3,
          "hidden_act": "quick_gelu",
          "layer_norm_eps": 1e-05,
          "projection_dim": 768,
          "dropout": 0.0
        }
        """;

    private const string FullClipJson = """
        {
          "architectures": ["CLIPModel"],
          "model_type": "clip",
          "projection_dim": 512,
          "text_config": { "hidden_size": 512, "hidden_act": "quick_gelu" },
          "vision_config": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 16,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-06,
            "projection_dim": 256
          }
        }
        """;

    [Test]
    public void FromJson_VisionConfig_ReadsEveryKey()
    {
        var config = ClipVisionConfig.FromJson(VisionJson);

        Assert.That(config, Is.EqualTo(new ClipVisionConfig
        {
            HiddenSize = 1024,
            IntermediateSize = 4096,
            NumHiddenLayers = 24,
            NumAttentionHeads = 16,
            ImageSize = 224,
            PatchSize = 14,
            NumChannels = 3,
            HiddenAct = ClipActivation.QuickGelu,
            LayerNormEps = 1e-5,
            ProjectionDim = 768,
        }));
        Assert.That(config.NumPositions, Is.EqualTo(257));
        Assert.That(config.HeadDim, Is.EqualTo(64));
    }

    [Test]
    public void FromJson_FullClipModelConfig_ReadsNestedVisionConfigAndTopLevelProjectionDim()
    {
        var config = ClipVisionConfig.FromJson(FullClipJson);

        Assert.That(config.HiddenSize, Is.EqualTo(768));
        Assert.That(config.PatchSize, Is.EqualTo(16));
        Assert.That(config.HiddenAct, Is.EqualTo(ClipActivation.Gelu));
        Assert.That(config.LayerNormEps, Is.EqualTo(1e-6));
        Assert.That(config.ProjectionDim, Is.EqualTo(512));
        Assert.That(config.NumChannels, Is.EqualTo(3), "a missing key takes the HF default");
    }

    [Test]
    public void ToJson_RoundTrip_GivesEqualConfig()
    {
        var config = ClipVisionConfig.FromJson(FullClipJson);

        var again = ClipVisionConfig.FromJson(config.ToJson());

        Assert.That(again, Is.EqualTo(config));
    }

    [Test]
    public void ToJson_Always_WritesHuggingFaceKeys()
    {
        string json = new ClipVisionConfig { HiddenAct = ClipActivation.Gelu }.ToJson(withProjection: true);

        Assert.That(json, Does.Contain("\"hidden_act\": \"gelu\""));
        Assert.That(json, Does.Contain("\"model_type\": \"clip_vision_model\""));
        Assert.That(json, Does.Contain("CLIPVisionModelWithProjection"));
        Assert.That(json, Does.Contain("\"num_attention_heads\": 12"));
    }

    [Test]
    public void FromJson_HiddenSizeNotDivisibleByHeads_ThrowsNamingHiddenSize()
    {
        var e = Assert.Throws<ArgumentException>(() => ClipVisionConfig.FromJson("""{"hidden_size": 100, "num_attention_heads": 12}"""));

        Assert.That(e!.Message, Does.Contain("hidden_size").And.Contain("num_attention_heads"));
    }

    [Test]
    public void FromJson_ImageSizeNotDivisibleByPatch_ThrowsNamingImageSize()
    {
        var e = Assert.Throws<ArgumentException>(() => ClipVisionConfig.FromJson("""{"image_size": 225, "patch_size": 32}"""));

        Assert.That(e!.ParamName, Is.EqualTo("image_size"));
    }

    [Test]
    public void FromJson_UnknownActivation_ThrowsNamingHiddenAct()
    {
        var e = Assert.Throws<ArgumentException>(() => ClipVisionConfig.FromJson("""{"hidden_act": "relu"}"""));

        Assert.That(e!.Message, Does.Contain("hidden_act").And.Contain("relu"));
    }

    [Test]
    public void FromJson_NonPositiveLayers_ThrowsNamingKey()
    {
        var e = Assert.Throws<ArgumentException>(() => ClipVisionConfig.FromJson("""{"num_hidden_layers": 0}"""));

        Assert.That(e!.ParamName, Is.EqualTo("num_hidden_layers"));
    }

    [Test]
    public void FromJson_NonPositiveEps_ThrowsNamingKey()
    {
        var e = Assert.Throws<ArgumentException>(() => ClipVisionConfig.FromJson("""{"layer_norm_eps": -1}"""));

        Assert.That(e!.ParamName, Is.EqualTo("layer_norm_eps"));
    }

    [Test]
    public void FromJson_StringWhereIntegerExpected_ThrowsNamingKey()
    {
        var e = Assert.Throws<FormatException>(() => ClipVisionConfig.FromJson("""{"patch_size": "32"}"""));

        Assert.That(e!.Message, Does.Contain("patch_size"));
    }

    [Test]
    public void FromJson_NotJson_ThrowsFormatException()
    {
        Assert.Throws<FormatException>(() => ClipVisionConfig.FromJson("{ hidden_size: "));
    }

    [Test]
    public void FromFile_BadValue_MessageNamesFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"clip-config-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, """{"num_attention_heads": -3}""");
        try
        {
            var e = Assert.Throws<ArgumentException>(() => ClipVisionConfig.FromFile(path));

            Assert.That(e!.Message, Does.Contain(path).And.Contain("num_attention_heads"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void Validate_HandBuiltBadConfig_Throws()
    {
        var config = new ClipVisionConfig { PatchSize = 0 };

        var e = Assert.Throws<ArgumentException>(() => config.Validate());
        Assert.That(e!.ParamName, Is.EqualTo("patch_size"));
    }
}
