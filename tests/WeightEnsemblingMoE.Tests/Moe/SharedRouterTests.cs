using TorchSharp;
using WeightEnsembling.Moe;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Moe;

/// <summary>E-WEMoE: one router shared by several blocks, with the layer-position encoding in front of its input.</summary>
[TestFixture, NonParallelizable]
public sealed class SharedRouterTests
{
    private const int Hidden = 4;
    private const int Tasks = 2;

    private static WeightEnsemblingMoE Block(Router shared, int layer)
    {
        var pretrained = MoeReference.GetAll("pretrained.");
        var experts = Enumerable.Range(0, Tasks).Select(t => MoeReference.GetAll($"expert{t}.")).ToList();
        return new WeightEnsemblingMoE(
            new TinyMlp(Hidden, 6).Load(pretrained),
            TaskVectorDictionary.Create(pretrained, experts, TaskVectorStorageOptions.Dense()),
            shared,
            ownsGate: false,
            layerIndex: layer);
    }

    private static Router SharedRouter()
        => Router.Create(2, Hidden + Router.PositionEncodingDimension, Tasks, 0.3, seed: 11);

    [Test]
    public void Forward_WithLayerIndex_RoutesOnPositionEncodingThenTokens()
    {
        using var scope = NewDisposeScope();
        using var shared = SharedRouter();
        using var block = Block(shared, layer: 3);
        var input = randn(2, 5, Hidden);
        block.call(input);
        using (no_grad())
        {
            // FusionBench's order: cat((pe, hidden_states), dim=-1).
            var encoding = tensor(Enumerable.Range(0, 4).Select(i => (float)Math.Sin(3 / Math.Pow(10000, 2.0 * i / 8)))
                .Concat(Enumerable.Range(0, 4).Select(i => (float)Math.Cos(3 / Math.Pow(10000, 2.0 * i / 8)))).ToArray());
            var gateInput = cat([encoding.expand(2, 5, 8), input], 2);
            var expected = shared.call(gateInput).mean([1L]);
            Assert.That(block.LastRoutingWeights!.allclose(expected, rtol: 0, atol: 1e-6), Is.True);
        }
    }

    [Test]
    public void Forward_DifferentLayers_RouteDifferently()
    {
        using var scope = NewDisposeScope();
        using var shared = SharedRouter();
        using (no_grad())
        {
            shared.state_dict()["fc1.weight"].normal_(0, 1);
        }

        using var first = Block(shared, layer: 0);
        using var second = Block(shared, layer: 5);
        var input = randn(1, 3, Hidden);
        first.call(input);
        second.call(input);
        Assert.That(first.LastRoutingWeights!.allclose(second.LastRoutingWeights!, rtol: 0, atol: 1e-6), Is.False);
    }

    [Test]
    public void Parameters_OfParentHoldingTwoBlocks_ListSharedRouterOnce()
    {
        using var scope = NewDisposeScope();
        using var shared = SharedRouter();
        // A ModuleList registers its items only once it is itself registered (standalone, parameters() is empty).
        using var list = nn.ModuleList(Block(shared, 0), Block(shared, 1));
        using var blocks = new Encoder(list);
        var trainable = blocks.parameters().Where(p => p.requires_grad).ToList();
        Assert.That(trainable, Has.Count.EqualTo(4));
        Assert.That(blocks.state_dict().Keys, Does.Contain("layers.0.gate.fc1.weight").And.Contain("layers.1.gate.fc1.weight"));
    }

    [Test]
    public void DistinctTrainableParameters_OverBlocksSharingRouter_YieldsEachOnce()
    {
        using var scope = NewDisposeScope();
        using var shared = SharedRouter();
        using var first = Block(shared, 0);
        using var second = Block(shared, 1);
        var naive = first.parameters().Concat(second.parameters()).Where(p => p.requires_grad).Count();
        var distinct = WeightEnsemblingMoE.DistinctTrainableParameters([first, second]);
        Assert.That(naive, Is.EqualTo(8));
        Assert.That(distinct, Has.Count.EqualTo(4));
        Assert.That(distinct.Select(p => p.Handle), Is.EquivalentTo(shared.parameters().Select(p => p.Handle)));
    }

    [Test]
    public void Dispose_OfOneBlock_LeavesSharedRouterWorkingForTheOther()
    {
        using var scope = NewDisposeScope();
        using var shared = SharedRouter();
        var first = Block(shared, 0);
        using var second = Block(shared, 1);
        first.Dispose();
        var output = second.call(randn(2, 3, Hidden));
        Assert.That(output.shape, Is.EqualTo(new long[] { 2, 3, Hidden }));
        Assert.That(shared.parameters().All(p => !p.IsInvalid), Is.True);
    }

    [Test]
    public void Dispose_OfOwningBlock_DisposesItsRouter()
    {
        using var scope = NewDisposeScope();
        var router = Router.Create(1, Hidden, Tasks, 0.3, seed: 1);
        var pretrained = MoeReference.GetAll("pretrained.");
        var experts = Enumerable.Range(0, Tasks).Select(t => MoeReference.GetAll($"expert{t}.")).ToList();
        var block = new WeightEnsemblingMoE(
            new TinyMlp(Hidden, 6).Load(pretrained),
            TaskVectorDictionary.Create(pretrained, experts, TaskVectorStorageOptions.Dense()),
            router);
        var weight = router.parameters().First();
        block.Dispose();
        Assert.That(weight.IsInvalid, Is.True);
    }

    [Test]
    public void Constructor_SharedRouterWithoutEncodingWidth_ThrowsNamingWidths()
    {
        using var scope = NewDisposeScope();
        using var plain = Router.Create(2, Hidden, Tasks, 0.3, seed: 1);
        var exception = Assert.Throws<ArgumentException>(() => Block(plain, 0));
        Assert.That(exception!.Message, Does.Contain("width 12"));
    }

    private sealed class Encoder : nn.Module
    {
        private readonly TorchSharp.Modules.ModuleList<WeightEnsemblingMoE> layers;

        public Encoder(TorchSharp.Modules.ModuleList<WeightEnsemblingMoE> layers) : base(nameof(Encoder))
        {
            this.layers = layers;
            RegisterComponents();
        }
    }
}
