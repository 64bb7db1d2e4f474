using TorchSharp;
using WeightEnsembling.Clip;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Clip;

[TestFixture, NonParallelizable]
public sealed class ClipVisionModelTests
{
    internal static readonly ClipVisionConfig Tiny = new()
    {
        HiddenSize = 8,
        IntermediateSize = 16,
        NumHiddenLayers = 2,
        NumAttentionHeads = 2,
        ImageSize = 8,
        PatchSize = 4,
        NumChannels = 3,
        ProjectionDim = 4,
    };

    [Test]
    public void StateDict_WithProjection_HasHuggingFaceKeys()
    {
        using var model = new ClipVisionModel(Tiny);
        var keys = model.state_dict().Keys.ToHashSet();

        Assert.That(keys, Does.Contain("vision_model.embeddings.class_embedding"));
        Assert.That(keys, Does.Contain("vision_model.embeddings.patch_embedding.weight"));
        Assert.That(keys, Does.Contain("vision_model.embeddings.position_embedding.weight"));
        Assert.That(keys, Does.Contain("vision_model.pre_layrnorm.weight"));
        Assert.That(keys, Does.Contain("vision_model.encoder.layers.1.self_attn.out_proj.bias"));
        Assert.That(keys, Does.Contain("vision_model.encoder.layers.0.mlp.fc2.weight"));
        Assert.That(keys, Does.Contain("vision_model.encoder.layers.0.layer_norm2.bias"));
        Assert.That(keys, Does.Contain("vision_model.post_layernorm.bias"));
        Assert.That(keys, Does.Contain("visual_projection.weight"));
        Assert.That(keys, Has.None.Contains("position_ids"));
        // 3 embedding + 2 pre_layrnorm + 16 per layer + 2 post_layernorm + 1 projection.
        Assert.That(keys, Has.Count.EqualTo(3 + 2 + 16 * 2 + 2 + 1));
    }

    [Test]
    public void StateDict_WithoutProjection_HasNoProjectionKey()
    {
        using var model = new ClipVisionModel(Tiny, withProjection: false);
        var keys = model.state_dict().Keys.ToList();

        Assert.That(keys, Has.None.StartsWith("visual_projection"));
        Assert.That(keys, Has.Count.EqualTo(3 + 2 + 16 * 2 + 2));
    }

    [Test]
    public void StateDict_ParameterShapes_MatchHuggingFace()
    {
        using var model = new ClipVisionModel(Tiny);
        var sd = model.state_dict();

        Assert.That(sd["vision_model.embeddings.patch_embedding.weight"].shape, Is.EqualTo(new long[] { 8, 3, 4, 4 }));
        Assert.That(sd["vision_model.embeddings.position_embedding.weight"].shape, Is.EqualTo(new long[] { 5, 8 }));
        Assert.That(sd["vision_model.embeddings.class_embedding"].shape, Is.EqualTo(new long[] { 8 }));
        Assert.That(sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape, Is.EqualTo(new long[] { 16, 8 }));
        Assert.That(sd["visual_projection.weight"].shape, Is.EqualTo(new long[] { 4, 8 }));
    }

    [Test]
    public void Forward_TinyBatch_ReturnsExpectedShapes()
    {
        using var model = new ClipVisionModel(Tiny);
        using var pixels = torch.randn(2, 3, 8, 8);
        using var output = model.forward(pixels);

        Assert.That(output.LastHiddenState.shape, Is.EqualTo(new long[] { 2, 5, 8 }));
        Assert.That(output.PooledOutput.shape, Is.EqualTo(new long[] { 2, 8 }));
        Assert.That(output.ImageEmbeds!.shape, Is.EqualTo(new long[] { 2, 4 }));
    }

    [Test]
    public void Forward_WrongImageSize_ThrowsNamingPixelValues()
    {
        using var model = new ClipVisionModel(Tiny);
        using var pixels = torch.randn(1, 3, 12, 12);

        var e = Assert.Throws<ArgumentException>(() => model.forward(pixels));
        Assert.That(e!.Message, Does.Contain("pixel_values").And.Contain("[B, 3, 8, 8]"));
    }

    [Test]
    public void Forward_Input_IsNotDisposed()
    {
        using var model = new ClipVisionModel(Tiny);
        using var pixels = torch.randn(1, 3, 8, 8);
        using (model.forward(pixels))
        {
        }

        Assert.That(pixels.IsInvalid, Is.False);
        Assert.That(pixels.sum().item<float>(), Is.Not.NaN);
    }

    [Test]
    public void GetImageFeatures_WithProjection_EqualsImageEmbeds()
    {
        using var model = new ClipVisionModel(Tiny);
        using var pixels = torch.randn(2, 3, 8, 8);
        using var output = model.forward(pixels);
        using var features = model.GetImageFeatures(pixels);

        Assert.That(features.allclose(output.ImageEmbeds!), Is.True);
    }

    [Test]
    public void GetImageFeatures_WithoutProjection_EqualsPooledOutput()
    {
        using var model = new ClipVisionModel(Tiny, withProjection: false);
        using var pixels = torch.randn(2, 3, 8, 8);
        using var output = model.forward(pixels);
        using var features = model.GetImageFeatures(pixels);

        Assert.That(output.ImageEmbeds, Is.Null);
        Assert.That(features.allclose(output.PooledOutput), Is.True);
    }
}
