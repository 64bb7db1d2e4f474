using TorchSharp;
using WeightEnsembling.Moe;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Moe;

[TestFixture, NonParallelizable]
public sealed class RouterTests
{
    [Test]
    public void Create_DepthZero_HasWeightVectorEqualToLambda()
    {
        using var router = Router.Create(0, inputDimension: 4, taskCount: 3, initLambda: 0.3, seed: 1);
        var state = router.state_dict();
        Assert.That(state.Keys, Is.EquivalentTo(new[] { "weight" }));
        Assert.That(state["weight"].shape, Is.EqualTo(new long[] { 3 }));
        Assert.That(state["weight"].data<float>().ToArray(), Is.All.EqualTo(0.3f).Within(1e-7));
    }

    [Test]
    public void Create_DepthOne_HasFcKeysShapesAndBiasLambda()
    {
        using var router = Router.Create(1, inputDimension: 5, taskCount: 3, initLambda: 0.2, seed: 1);
        var state = router.state_dict();
        Assert.That(state.Keys, Is.EquivalentTo(new[] { "fc.weight", "fc.bias" }));
        Assert.That(state["fc.weight"].shape, Is.EqualTo(new long[] { 3, 5 }));
        Assert.That(state["fc.bias"].data<float>().ToArray(), Is.All.EqualTo(0.2f).Within(1e-7));
    }

    [Test]
    public void Create_DepthTwo_HasFc1Fc2KeysShapesAndBiases()
    {
        using var router = Router.Create(2, inputDimension: 5, taskCount: 3, initLambda: 0.4, seed: 1);
        var state = router.state_dict();
        Assert.That(state.Keys, Is.EquivalentTo(new[] { "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias" }));
        Assert.That(state["fc1.weight"].shape, Is.EqualTo(new long[] { 5, 5 }));
        Assert.That(state["fc2.weight"].shape, Is.EqualTo(new long[] { 3, 5 }));
        Assert.That(state["fc1.bias"].data<float>().ToArray(), Is.All.EqualTo(0f));
        Assert.That(state["fc2.bias"].data<float>().ToArray(), Is.All.EqualTo(0.4f).Within(1e-7));
    }

    [Test]
    public void Create_DepthTwo_WeightsHaveStdNearPointZeroOne()
    {
        using var router = Router.Create(2, inputDimension: 64, taskCount: 8, initLambda: 0.3, seed: 7);
        var state = router.state_dict();
        double std = state["fc1.weight"].std().item<float>();
        double mean = state["fc1.weight"].mean().item<float>();
        Assert.That(std, Is.EqualTo(0.01).Within(0.001));
        Assert.That(mean, Is.EqualTo(0.0).Within(0.001));
        Assert.That(state["fc2.weight"].std().item<float>(), Is.EqualTo(0.01).Within(0.003));
    }

    [Test]
    public void Create_SameSeed_GivesSameWeights()
    {
        using var first = Router.Create(2, 6, 2, 0.3, seed: 42);
        using var second = Router.Create(2, 6, 2, 0.3, seed: 42);
        using var third = Router.Create(2, 6, 2, 0.3, seed: 43);
        // TorchSharp's Tensor.equal is elementwise (PyTorch's eq), not torch.equal: compare with allclose(0, 0).
        Assert.That(first.state_dict()["fc1.weight"].allclose(second.state_dict()["fc1.weight"], rtol: 0, atol: 0), Is.True);
        Assert.That(first.state_dict()["fc1.weight"].allclose(third.state_dict()["fc1.weight"], rtol: 0, atol: 0), Is.False);
    }

    [Test]
    public void Create_AnyDepth_AllParametersRequireGrad()
    {
        for (int depth = 0; depth <= 2; depth++)
        {
            using var router = Router.Create(depth, 4, 2, 0.3, seed: 1);
            Assert.That(router.parameters().All(p => p.requires_grad), Is.True, $"depth {depth}");
            Assert.That(router.Depth, Is.EqualTo(depth));
        }
    }

    [TestCase(-1)]
    [TestCase(3)]
    public void Create_UnsupportedDepth_ThrowsNamingDepth(int depth)
    {
        var exception = Assert.Throws<ArgumentOutOfRangeException>(() => Router.Create(depth, 4, 2, 0.3));
        Assert.That(exception!.ParamName, Is.EqualTo("depth"));
    }

    [Test]
    public void Create_NaNLambda_ThrowsNamingInitLambda()
    {
        var exception = Assert.Throws<ArgumentOutOfRangeException>(() => Router.Create(1, 4, 2, double.NaN));
        Assert.That(exception!.ParamName, Is.EqualTo("initLambda"));
    }

    [Test]
    public void Forward_DepthZero_ReturnsWeightForEveryToken()
    {
        using var scope = NewDisposeScope();
        using var router = Router.Create(0, 4, 3, 0.25, seed: 1);
        var output = router.call(randn(2, 5, 4));
        Assert.That(output.shape, Is.EqualTo(new long[] { 2, 5, 3 }));
        Assert.That(output.data<float>().ToArray(), Is.All.EqualTo(0.25f).Within(1e-7));
    }

    [Test]
    public void Forward_DepthTwo_EqualsLinearReluLinear()
    {
        using var scope = NewDisposeScope();
        using var router = Router.Create(2, 4, 3, 0.3, seed: 3);
        var state = router.state_dict();
        var input = randn(2, 5, 4);
        var expected = nn.functional.linear(
            nn.functional.relu(nn.functional.linear(input, state["fc1.weight"], state["fc1.bias"])),
            state["fc2.weight"], state["fc2.bias"]);
        Assert.That(router.call(input).allclose(expected, rtol: 0, atol: 1e-6), Is.True);
    }

    [Test]
    public void Forward_WrongInputWidth_ThrowsNamingExpectedShape()
    {
        using var scope = NewDisposeScope();
        using var router = Router.Create(1, 4, 3, 0.3, seed: 3);
        var exception = Assert.Throws<ArgumentException>(() => router.call(randn(2, 5, 6)));
        Assert.That(exception!.Message, Does.Contain("[B, N, 4]"));
    }

    [Test]
    public void LayerPositionEncoding_MatchesPyTorchReference()
    {
        using var scope = NewDisposeScope();
        for (int layer = 0; layer < 12; layer++)
        {
            var expected = MoeReference.Get($"position_encoding.{layer}");
            var actual = Router.LayerPositionEncoding(layer);
            Assert.That(actual.shape, Is.EqualTo(new long[] { 8 }));
            Assert.That(actual.allclose(expected, rtol: 0, atol: 1e-6), Is.True, $"layer {layer}");
        }
    }

    [Test]
    public void LayerPositionEncoding_LayerTwo_MatchesHandComputedValues()
    {
        using var scope = NewDisposeScope();
        // pe(2)_i = sin(2 / 10000^(2i/8)), i = 0..3, then the cosines.
        double[] angles = [2.0, 2.0 / 10.0, 2.0 / 100.0, 2.0 / 1000.0];
        var expected = angles.Select(Math.Sin).Concat(angles.Select(Math.Cos)).Select(v => (float)v).ToArray();
        Assert.That(Router.LayerPositionEncoding(2).data<float>().ToArray(), Is.EqualTo(expected).Within(1e-6));
    }
}
