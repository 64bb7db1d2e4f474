using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Clip;

/// <summary>Loading and saving HF folders, checked against the PyTorch reference of tools/fixtures/clip_reference.py.</summary>
[TestFixture, NonParallelizable]
public sealed class ClipPretrainedTests
{
    private const double Tolerance = 1e-5;
    private string _temp = null!;

    private static string Fixture(string name) => Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Clip", name);

    [SetUp]
    public void SetUp()
    {
        _temp = Path.Combine(Path.GetTempPath(), $"clip-tests-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_temp);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_temp, recursive: true);

    private static void AssertMatchesReference(ClipVisionModel model, string fixture)
    {
        using var scope = torch.NewDisposeScope();
        using var inputs = SafeTensorsFile.Open(Path.Combine(Fixture(fixture), "inputs.safetensors"));
        using var expected = SafeTensorsFile.Open(Path.Combine(Fixture(fixture), "expected.safetensors"));
        var output = model.forward(inputs.Load("pixel_values"));

        Assert.Multiple(() =>
        {
            AssertClose(output.LastHiddenState, expected.Load("last_hidden_state"), "last_hidden_state");
            AssertClose(output.PooledOutput, expected.Load("pooled_output"), "pooled_output");
            AssertClose(output.ImageEmbeds!, expected.Load("image_embeds"), "image_embeds");
        });
    }

    private static void AssertClose(Tensor actual, Tensor expected, string what)
    {
        Assert.That(actual.shape, Is.EqualTo(expected.shape), what);
        double error = (actual - expected).abs().max().item<float>();
        Assert.That(error, Is.LessThanOrEqualTo(Tolerance), what);
    }

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

    [Test]
    public void FromPretrained_QuickGeluVisionCheckpoint_MatchesPyTorchReference()
    {
        using var model = ClipVisionModel.FromPretrained(Fixture("quick_gelu"));

        Assert.That(model.Config.HiddenAct, Is.EqualTo(ClipActivation.QuickGelu));
        AssertMatchesReference(model, "quick_gelu");
    }

    [Test]
    public void FromPretrained_FullClipModelCheckpointWithGelu_MatchesPyTorchReference()
    {
        using var model = ClipVisionModel.FromPretrained(Fixture("gelu"));

        Assert.That(model.Config.HiddenAct, Is.EqualTo(ClipActivation.Gelu));
        AssertMatchesReference(model, "gelu");
    }

    [Test]
    public void FromPretrained_FullClipModelCheckpoint_SkipsTextTensors()
    {
        using var model = ClipVisionModel.FromPretrained(Fixture("gelu"));
        var keys = model.state_dict().Keys.ToList();

        Assert.That(model.HasProjection, Is.True);
        Assert.That(model.Config.ProjectionDim, Is.EqualTo(8), "the top-level projection_dim wins over vision_config's");
        Assert.That(keys, Has.None.StartsWith("text_").And.None.EqualTo("logit_scale"));
        Assert.That(keys, Has.Count.EqualTo(40));
    }

    [Test]
    public void FromPretrained_ShardedCheckpoint_MatchesPyTorchReference()
    {
        using var model = ClipVisionModel.FromPretrained(Fixture("sharded"));

        AssertMatchesReference(model, "sharded");
    }

    [Test]
    public void FromPretrained_WithoutProjectionTensor_HasNoProjection()
    {
        string folder = CopyFixture("quick_gelu");
        RewriteWeights(folder, t => { t.Remove("visual_projection.weight", out var p); p!.Dispose(); });

        using var model = ClipVisionModel.FromPretrained(folder);

        Assert.That(model.HasProjection, Is.False);
        Assert.That(model.state_dict().Keys, Has.None.StartsWith("visual_projection"));
    }

    [Test]
    public void SaveTo_ThenFromPretrained_GivesIdenticalOutputs()
    {
        using var original = ClipVisionModel.FromPretrained(Fixture("gelu"));
        string folder = Path.Combine(_temp, "saved");
        original.SaveTo(folder);

        using var reloaded = ClipVisionModel.FromPretrained(folder);
        using var pixels = torch.randn(2, 3, 12, 12);
        using var a = original.forward(pixels);
        using var b = reloaded.forward(pixels);

        Assert.That(reloaded.Config, Is.EqualTo(original.Config));
        Assert.That(a.LastHiddenState.allclose(b.LastHiddenState, rtol: 0, atol: 0), Is.True);
        Assert.That(a.ImageEmbeds!.allclose(b.ImageEmbeds!, rtol: 0, atol: 0), Is.True);
    }

    [Test]
    public void SaveTo_Folder_WritesOnlyConfigAndWeights()
    {
        using var model = new ClipVisionModel(ClipVisionModelTests.Tiny);

        model.SaveTo(_temp);

        Assert.That(Directory.GetFiles(_temp).Select(Path.GetFileName), Is.EquivalentTo(new[] { "config.json", "model.safetensors" }));
        using var file = SafeTensorsFile.Open(Path.Combine(_temp, "model.safetensors"));
        Assert.That(file.Names, Is.EquivalentTo(model.state_dict().Keys));
    }

    [Test]
    public void SaveTo_ParameterWithNaN_ThrowsNamingTensor()
    {
        using var model = new ClipVisionModel(ClipVisionModelTests.Tiny);
        using (torch.no_grad())
        {
            model.state_dict()["vision_model.post_layernorm.bias"][0] = float.NaN;
        }

        var e = Assert.Throws<InvalidOperationException>(() => model.SaveTo(_temp));
        Assert.That(e!.Message, Does.Contain("vision_model.post_layernorm.bias"));
    }

    [Test]
    public void FromPretrained_MissingTensor_ThrowsNamingTensorAndFile()
    {
        string folder = CopyFixture("quick_gelu");
        const string name = "vision_model.encoder.layers.1.mlp.fc1.bias";
        RewriteWeights(folder, t => { t.Remove(name, out var p); p!.Dispose(); });

        var e = Assert.Throws<InvalidDataException>(() => ClipVisionModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain(name).And.Contain("model.safetensors"));
    }

    [Test]
    public void FromPretrained_ShapeMismatch_ThrowsNamingTensorAndShapes()
    {
        string folder = CopyFixture("quick_gelu");
        const string name = "vision_model.encoder.layers.0.self_attn.q_proj.weight";
        RewriteWeights(folder, t => { t[name].Dispose(); t[name] = torch.zeros(16, 15); });

        var e = Assert.Throws<InvalidDataException>(() => ClipVisionModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain(name).And.Contain("[16, 15]").And.Contain("[16, 16]"));
    }

    [Test]
    public void FromPretrained_UnexpectedVisionTensor_ThrowsNamingIt()
    {
        string folder = CopyFixture("quick_gelu");
        RewriteWeights(folder, t => t["vision_model.encoder.layers.2.mlp.fc1.bias"] = torch.zeros(32));

        var e = Assert.Throws<InvalidDataException>(() => ClipVisionModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain("vision_model.encoder.layers.2.mlp.fc1.bias"));
    }

    [Test]
    public void FromPretrained_NaNWeight_ThrowsNamingTensor()
    {
        string folder = CopyFixture("quick_gelu");
        const string name = "vision_model.pre_layrnorm.bias";
        RewriteWeights(folder, t => t[name][3] = float.NaN);

        var e = Assert.Throws<InvalidDataException>(() => ClipVisionModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain(name).And.Contain("NaN"));
    }

    [Test]
    public void FromPretrained_Float16Checkpoint_LoadsAsFloat32()
    {
        string folder = CopyFixture("quick_gelu");
        RewriteWeights(folder, t =>
        {
            foreach (string key in t.Keys.ToList())
            {
                var half = t[key].to(torch.float16);
                t[key].Dispose();
                t[key] = half;
            }
        });

        using var model = ClipVisionModel.FromPretrained(folder);
        using var reference = ClipVisionModel.FromPretrained(Fixture("quick_gelu"));
        var loaded = model.state_dict()["vision_model.encoder.layers.0.mlp.fc1.weight"];
        var exact = reference.state_dict()["vision_model.encoder.layers.0.mlp.fc1.weight"];

        Assert.That(loaded.dtype, Is.EqualTo(ScalarType.Float32));
        Assert.That(loaded.allclose(exact, rtol: 1e-3, atol: 1e-3), Is.True);
    }

    [Test]
    public void FromPretrained_MissingConfig_ThrowsNamingConfigFile()
    {
        string folder = CopyFixture("quick_gelu");
        File.Delete(Path.Combine(folder, "config.json"));

        var e = Assert.Throws<FileNotFoundException>(() => ClipVisionModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain("config.json"));
    }

    [Test]
    public void FromPretrained_NoWeights_ThrowsNamingFolder()
    {
        string folder = CopyFixture("quick_gelu");
        File.Delete(Path.Combine(folder, "model.safetensors"));

        var e = Assert.Throws<FileNotFoundException>(() => ClipVisionModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain(folder).And.Contain("model.safetensors"));
    }

    [Test]
    public void FromPretrained_MissingShard_ThrowsNamingShard()
    {
        string folder = CopyFixture("sharded");
        File.Delete(Path.Combine(folder, "model-00002-of-00002.safetensors"));

        var e = Assert.Throws<FileNotFoundException>(() => ClipVisionModel.FromPretrained(folder));

        Assert.That(e!.Message, Does.Contain("model-00002-of-00002.safetensors"));
    }

    [Test]
    public void FromPretrained_ConfigDisagreesWithWeights_Throws()
    {
        string folder = CopyFixture("quick_gelu");
        File.WriteAllText(Path.Combine(folder, "config.json"), ClipVisionModelTests.Tiny.ToJson());

        Assert.Throws<InvalidDataException>(() => ClipVisionModel.FromPretrained(folder));
    }
}
