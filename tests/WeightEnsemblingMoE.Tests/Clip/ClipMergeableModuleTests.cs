using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Moe;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Clip;

[TestFixture, NonParallelizable]
public sealed class ClipMergeableModuleTests
{
    /// <summary>A linear function computing each layer with twice the module's weight (and its own bias).</summary>
    private static LinearLayerFunction Doubled(Func<string, TorchSharp.Modules.Linear> layer) =>
        (name, x) => nn.functional.linear(x, layer(name).weight! * 2, layer(name).bias);

    private static void DoubleWeights(IEnumerable<TorchSharp.Modules.Linear> layers)
    {
        using var noGrad = torch.no_grad();
        foreach (var layer in layers)
        {
            layer.weight!.mul_(2);
        }
    }

    [Test]
    public void ClipMlp_LinearLayerNames_AreFc1Fc2()
    {
        using var mlp = new ClipMlp(8, 16, ClipActivation.QuickGelu);

        Assert.That(mlp.LinearLayerNames, Is.EqualTo(new[] { "fc1", "fc2" }));
    }

    [Test]
    public void ClipAttention_LinearLayerNames_AreProjections()
    {
        using var attention = new ClipAttention(8, 2);

        Assert.That(attention.LinearLayerNames, Is.EqualTo(new[] { "q_proj", "k_proj", "v_proj", "out_proj" }));
    }

    [Test]
    public void ClipMlp_ForwardWithSuppliedLinear_UsesSuppliedWeights()
    {
        using var mlp = new ClipMlp(8, 16, ClipActivation.Gelu);
        using var input = torch.randn(2, 5, 8);
        using var viaDelegate = mlp.Forward(input, Doubled(mlp.GetLinearLayer));
        using var plain = mlp.forward(input);
        DoubleWeights(mlp.LinearLayerNames.Select(mlp.GetLinearLayer));
        using var withDoubledWeights = mlp.forward(input);

        Assert.That(viaDelegate.allclose(withDoubledWeights, rtol: 1e-5, atol: 1e-6), Is.True);
        Assert.That(viaDelegate.allclose(plain, rtol: 1e-3, atol: 1e-3), Is.False);
    }

    [Test]
    public void ClipAttention_ForwardWithSuppliedLinear_UsesSuppliedWeights()
    {
        using var attention = new ClipAttention(8, 2);
        using var input = torch.randn(2, 5, 8);
        using var viaDelegate = attention.Forward(input, Doubled(attention.GetLinearLayer));
        using var plain = attention.forward(input);
        DoubleWeights(attention.LinearLayerNames.Select(attention.GetLinearLayer));
        using var withDoubledWeights = attention.forward(input);

        Assert.That(viaDelegate.allclose(withDoubledWeights, rtol: 1e-5, atol: 1e-6), Is.True);
        Assert.That(viaDelegate.allclose(plain, rtol: 1e-3, atol: 1e-3), Is.False);
    }

    [Test]
    public void ClipAttention_EachToken_AttendsToWholeSequence()
    {
        using var attention = new ClipAttention(8, 2);
        using var input = torch.randn(1, 4, 8);
        using var changed = input.clone();
        using (torch.no_grad())
        {
            changed[0, 3] += 1.0f;
        }

        using var a = attention.forward(input);
        using var b = attention.forward(changed);

        // No causal mask: changing the last token changes the first token's output.
        Assert.That(a[0, 0].allclose(b[0, 0], rtol: 1e-4, atol: 1e-5), Is.False);
    }

    [Test]
    public void ClipAttention_WrongWidth_ThrowsNamingShape()
    {
        using var attention = new ClipAttention(8, 2);
        using var input = torch.randn(1, 4, 6);

        var e = Assert.Throws<ArgumentException>(() => attention.forward(input));
        Assert.That(e!.Message, Does.Contain("[B, N, 8]").And.Contain("[1, 4, 6]"));
    }

    [Test]
    public void ClipAttention_HeadsNotDividingWidth_Throws()
    {
        Assert.Throws<ArgumentException>(() => new ClipAttention(10, 4));
    }

    [Test]
    public void ClipMlp_GetLinearLayer_UnknownName_ThrowsNamingIt()
    {
        using var mlp = new ClipMlp(8, 16, ClipActivation.QuickGelu);

        var e = Assert.Throws<ArgumentException>(() => mlp.GetLinearLayer("fc3"));
        Assert.That(e!.Message, Does.Contain("fc3"));
    }

    [Test]
    public void ClipMlp_QuickGelu_MatchesFormula()
    {
        using var mlp = new ClipMlp(4, 4, ClipActivation.QuickGelu);
        using var input = torch.randn(1, 3, 4);
        LinearLayerFunction identityFc1 = (name, x) => name == "fc1" ? x : x.alias();
        using var output = mlp.Forward(input, identityFc1);

        using var expected = input * torch.sigmoid(input * 1.702);
        Assert.That(output.allclose(expected, rtol: 1e-6, atol: 1e-7), Is.True);
    }
}
