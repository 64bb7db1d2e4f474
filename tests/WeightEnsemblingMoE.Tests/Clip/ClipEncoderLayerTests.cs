using TorchSharp;
using WeightEnsembling.Clip;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Clip;

[TestFixture, NonParallelizable]
public sealed class ClipEncoderLayerTests
{
    /// <summary>A replacement MLP with its own parameter name, returning zeros.</summary>
    private sealed class ZeroMlp : nn.Module<Tensor, Tensor>
    {
#pragma warning disable IDE1006
        private readonly TorchSharp.Modules.Parameter gate;
#pragma warning restore IDE1006

        public ZeroMlp(int width) : base(nameof(ZeroMlp))
        {
            gate = nn.Parameter(torch.ones(width));
            RegisterComponents();
        }

        public override Tensor forward(Tensor input) => input * gate * 0;
    }

    [Test]
    public void Mlp_Replaced_StateDictShowsNewKeysOnly()
    {
        using var model = new ClipVisionModel(ClipVisionModelTests.Tiny);
        var layer = model.Layers[1];
        using var old = layer.Mlp;
        layer.Mlp = new ZeroMlp(8);
        var keys = model.state_dict().Keys.ToList();

        Assert.That(keys, Does.Contain("vision_model.encoder.layers.1.mlp.gate"));
        Assert.That(keys, Has.None.StartsWith("vision_model.encoder.layers.1.mlp.fc"));
        Assert.That(keys, Does.Contain("vision_model.encoder.layers.0.mlp.fc1.weight"));
        Assert.That(keys, Has.Count.EqualTo(40 - 4 + 1));
    }

    [Test]
    public void Mlp_Replaced_ParametersShowNewModuleOnly()
    {
        using var model = new ClipVisionModel(ClipVisionModelTests.Tiny);
        var layer = model.Layers[0];
        using var old = layer.Mlp;
        int before = model.parameters().Count();
        layer.Mlp = new ZeroMlp(8);

        Assert.That(model.parameters().Count(), Is.EqualTo(before - 4 + 1));
    }

    [Test]
    public void Mlp_ReplacedWithZeroModule_ForwardSkipsMlp()
    {
        using var layer = new ClipEncoderLayer(ClipVisionModelTests.Tiny);
        using var input = torch.randn(2, 5, 8);
        using var before = layer.forward(input);
        using var old = layer.Mlp;
        layer.Mlp = new ZeroMlp(8);
        using var after = layer.forward(input);

        // With a zero MLP the layer is x + self_attn(layer_norm1(x)) only.
        using var attentionOnly = input + layer.SelfAttention.forward(layer.LayerNorm1.forward(input));
        Assert.That(after.allclose(attentionOnly, rtol: 0, atol: 1e-6), Is.True);
        Assert.That(after.allclose(before, rtol: 0, atol: 1e-3), Is.False);
    }

    [Test]
    public void SelfAttention_Replaced_StateDictShowsNewKeysUnderSelfAttn()
    {
        using var layer = new ClipEncoderLayer(ClipVisionModelTests.Tiny);
        using var old = layer.SelfAttention;
        layer.SelfAttention = new ZeroMlp(8);
        var keys = layer.state_dict().Keys.ToList();

        Assert.That(keys, Does.Contain("self_attn.gate"));
        Assert.That(keys, Has.None.Contains("q_proj"));
        Assert.That(keys, Has.Count.EqualTo(16 - 8 + 1));
    }

    [Test]
    public void SelfAttention_ReplacedWithZeroModule_ForwardIsMlpResidualOnly()
    {
        using var layer = new ClipEncoderLayer(ClipVisionModelTests.Tiny);
        using var old = layer.SelfAttention;
        layer.SelfAttention = new ZeroMlp(8);
        using var input = torch.randn(1, 5, 8);
        using var output = layer.forward(input);

        using var expected = input + layer.Mlp.forward(layer.LayerNorm2.forward(input));
        Assert.That(output.allclose(expected, rtol: 0, atol: 1e-6), Is.True);
    }

    [Test]
    public void Mlp_SetNull_Throws()
    {
        using var layer = new ClipEncoderLayer(ClipVisionModelTests.Tiny);

        Assert.Throws<ArgumentNullException>(() => layer.Mlp = null!);
    }
}
