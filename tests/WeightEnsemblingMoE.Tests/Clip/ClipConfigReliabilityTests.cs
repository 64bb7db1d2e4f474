using System.Text.Json.Nodes;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Clip;

/// <summary>Issue 18: config.json is checked on its own and against the checkpoint's headers before anything is allocated.</summary>
[TestFixture, NonParallelizable]
public sealed class ClipConfigReliabilityTests
{
    private static readonly ClipVisionConfig Tiny = new()
    {
        HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2, NumAttentionHeads = 2, ImageSize = 16, PatchSize = 8, ProjectionDim = 8,
    };

    private TempFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new TempFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    private string SaveTiny()
    {
        var folder = Path.Combine(_folder.Path, "model");
        using var model = new ClipVisionModel(Tiny);
        model.SaveTo(folder);
        return folder;
    }

    private static void EditConfig(string folder, Action<JsonObject> edit)
    {
        var path = Path.Combine(folder, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    [TestCase(1_000_000)]
    [TestCase(int.MaxValue)]
    public void FromPretrained_IntermediateSizeNotMatchingWeights_FailsFromHeadersBeforeAllocating(int intermediate)
    {
        // Before: 1,000,000 allocated 2.1 GB before the mismatch was reported; int.MaxValue made libtorch fail to
        // allocate 550 GB with an ExternalException naming no file.
        var folder = SaveTiny();
        EditConfig(folder, json => json["intermediate_size"] = intermediate);
        var ex = Assert.Throws<InvalidDataException>(() => ClipVisionModel.FromPretrained(folder).Dispose())!;
        Assert.That(ex.Message, Does.Contain("vision_model.encoder.layers.0.mlp.fc1.weight").And.Contain("intermediate_size")
            .And.Contain("config.json").And.Contain($"[{intermediate}, 16]"));
    }

    [TestCase(46341, 1)]
    [TestCase(65536, 1)]
    public void Config_PositionCountOverflowingInt32_IsRejectedNamingImageSize(int imageSize, int patchSize)
    {
        // Before: 46341/1 failed in libtorch with "negative dimension"; 65536/1 wrapped silently to 1 position.
        var ex = Assert.Throws<ArgumentException>(() => _ = (Tiny with { ImageSize = imageSize, PatchSize = patchSize }).Validate())!;
        Assert.That(ex.ParamName, Is.EqualTo("image_size"));
        Assert.That(ex.Message, Does.Contain("positions"));
    }

    [Test]
    public void FromPretrained_ImageSizeNotMatchingPositionEmbedding_FailsNamingTheTensor()
    {
        var folder = SaveTiny();
        EditConfig(folder, json => json["image_size"] = 24);
        var ex = Assert.Throws<InvalidDataException>(() => ClipVisionModel.FromPretrained(folder).Dispose())!;
        Assert.That(ex.Message, Does.Contain("position_embedding.weight").And.Contain("image_size"));
    }

    [TestCase("vit", "not a CLIP model")]
    [TestCase("clip_text_model", "text tower")]
    public void FromFile_ModelTypeNotClipVision_IsRefused(string modelType, string rule)
    {
        var folder = SaveTiny();
        EditConfig(folder, json => json["model_type"] = modelType);
        var ex = Assert.Throws<FormatException>(() => ClipVisionConfig.FromFile(Path.Combine(folder, "config.json")))!;
        Assert.That(ex.Message, Does.Contain(rule).And.Contain("config.json"));
    }

    [TestCase("{\"model_type\":\"clip\",\"vision_config\":{\"hidden_size\":16,\"num_attention_heads\":2}}", true)]
    [TestCase("{\"model_type\":\"clip_vision_model\",\"hidden_size\":16,\"num_attention_heads\":2}", true)]
    [TestCase("{\"hidden_size\":16,\"num_attention_heads\":2}", true)]
    [TestCase("{\"model_type\":\"clip\",\"vision_config\":{\"model_type\":\"clip_text_model\"}}", false)]
    public void FromJson_ModelTypes(string json, bool accepted)
    {
        if (accepted)
        {
            Assert.That(ClipVisionConfig.FromJson(json).HiddenSize, Is.EqualTo(16));
        }
        else
        {
            Assert.Throws<FormatException>(() => ClipVisionConfig.FromJson(json));
        }
    }

    [Test]
    public void FromFile_DuplicateKey_NamesTheFileAndTheKey()
    {
        // Before: ArgumentException "An item with the same key has already been added", naming neither.
        var path = Path.Combine(_folder.Path, "config.json");
        File.WriteAllText(path, "{\"model_type\":\"clip\",\"vision_config\":{\"hidden_size\":768,\"hidden_size\":16}}");
        var ex = Assert.Throws<FormatException>(() => ClipVisionConfig.FromFile(path))!;
        Assert.That(ex.Message, Does.Contain(path).And.Contain("'vision_config.hidden_size' more than once"));
    }

    [Test]
    public void FromPretrained_NonFloatingVisionTensor_IsInvalidDataNotNotSupported()
    {
        // Before: a U16 tensor threw NotSupportedException, which FromPretrained's docs did not list.
        var folder = SaveTiny();
        var path = Path.Combine(folder, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        var headerLength = (int)BitConverter.ToUInt64(bytes, 0);
        var header = System.Text.Encoding.UTF8.GetString(bytes, 8, headerLength);
        // class_embedding is F32 [16] = 64 bytes; as U16 [32] it keeps its byte length.
        var edited = header.Replace("\"vision_model.embeddings.class_embedding\":{\"dtype\":\"F32\",\"shape\":[16]",
            "\"vision_model.embeddings.class_embedding\":{\"dtype\":\"U16\",\"shape\":[32]", StringComparison.Ordinal);
        Assert.That(edited, Is.Not.EqualTo(header));
        System.Text.Encoding.UTF8.GetBytes(edited).CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        EditConfig(folder, _ => { });
        var ex = Assert.Throws<InvalidDataException>(() => ClipVisionModel.FromPretrained(folder).Dispose())!;
        Assert.That(ex.Message, Does.Contain("class_embedding"));
    }

    [Test]
    public void ExpectedTensors_MatchTheModulesStateDict()
    {
        foreach (var withProjection in new[] { false, true })
        {
            using var model = new ClipVisionModel(Tiny, withProjection);
            var actual = model.state_dict().Where(p => p.Key != "vision_model.embeddings.position_ids")
                .ToDictionary(p => p.Key, p => p.Value.shape);
            var expected = Tiny.ExpectedTensors(withProjection).ToDictionary(t => t.Name, t => t.Shape);
            Assert.That(expected.Keys.Order(), Is.EqualTo(actual.Keys.Order()));
            foreach (var (name, shape) in expected)
            {
                Assert.That(shape, Is.EqualTo(actual[name]), name);
            }
        }
    }

    [Test]
    public void SaveTo_AlternatingArchitectures_KeepsOtherFilesAndLeavesNoStaging()
    {
        var folder = SaveTiny();
        File.WriteAllText(Path.Combine(folder, "preprocessor_config.json"), "{}");
        using (var wide = new ClipVisionModel(Tiny with { HiddenSize = 32, IntermediateSize = 64 }))
        {
            wide.SaveTo(folder);
        }
        using var loaded = ClipVisionModel.FromPretrained(folder);
        Assert.That(loaded.Config.HiddenSize, Is.EqualTo(32));
        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { "config.json", "model.safetensors", "preprocessor_config.json" }));
        Assert.That(Directory.GetFileSystemEntries(_folder.Path), Has.Length.EqualTo(1));
    }
}
