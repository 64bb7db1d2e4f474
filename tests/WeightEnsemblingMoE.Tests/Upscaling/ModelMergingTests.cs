using WeightEnsembling.Clip;
using WeightEnsembling.Merging;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Upscaling;

[TestFixture, NonParallelizable]
public sealed class ModelMergingTests
{
    [Test]
    public void TaskArithmetic_Models_EqualsPretrainedPlusScaledSumOfTaskVectors()
    {
        using var pretrained = TinyClip.Pretrained();
        using var a = TinyClip.Expert(pretrained, 1);
        using var b = TinyClip.Expert(pretrained, 2);
        using var merged = ModelMerging.TaskArithmetic(pretrained, [a, b], 0.5);
        const string key = "vision_model.encoder.layers.1.self_attn.v_proj.weight";
        var theta0 = pretrained.state_dict()[key];
        var expected = theta0 + (0.5 * ((a.state_dict()[key] - theta0) + (b.state_dict()[key] - theta0)));
        Assert.That(TinyClip.MaxDifference(merged.state_dict()[key], expected), Is.LessThan(1e-6));
        Assert.That(merged.Config, Is.EqualTo(pretrained.Config));
    }

    [Test]
    public void SimpleAverage_IdenticalModels_EqualsThatModel()
    {
        using var pretrained = TinyClip.Pretrained();
        using var average = ModelMerging.SimpleAverage([pretrained, pretrained]);
        using var images = TinyClip.Images(2, 3);
        using var expected = pretrained.forward(images);
        using var actual = average.forward(images);
        Assert.That(TinyClip.MaxDifference(actual.LastHiddenState, expected.LastHiddenState), Is.LessThan(1e-6));
    }

    [Test]
    public void Ties_SingleExpertWithTopKOne_EqualsTaskArithmetic()
    {
        // With one expert and k = 100%, trimming keeps everything, the elected sign is each element's own sign, and the
        // disjoint sum is the task vector itself: TIES reduces to task arithmetic.
        using var pretrained = TinyClip.Pretrained();
        using var a = TinyClip.Expert(pretrained, 1);
        using var ties = ModelMerging.Ties(pretrained, [a], new TiesMergingOptions { TopK = 1.0, ScalingFactor = 0.7 });
        using var arithmetic = ModelMerging.TaskArithmetic(pretrained, [a], 0.7);
        foreach (var (name, tensor) in arithmetic.state_dict())
        {
            Assert.That(TinyClip.MaxDifference(ties.state_dict()[name], tensor), Is.LessThan(1e-6), name);
        }
    }

    [Test]
    public void TaskArithmetic_ExpertOfOtherArchitecture_ThrowsNamingTensor()
    {
        using var pretrained = TinyClip.Pretrained();
        using var other = TinyClip.Pretrained(2, TinyClip.Config with { IntermediateSize = 24 });
        Assert.That(() => ModelMerging.TaskArithmetic(pretrained, [other]), Throws.ArgumentException.With.Message.Contains("fc1"));
    }
}
