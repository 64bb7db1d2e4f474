using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Tasks;

[TestFixture, NonParallelizable]
public sealed class ImageTransformTests
{
    [Test]
    public void Apply_ReplicateResizeNormalise_MatchesPyTorch()
    {
        using var scope = NewDisposeScope();
        var fixture = TaskFixtures.Load("transform.json");
        var images = TaskFixtures.Tensor(fixture, "images", "shape");
        var transform = ImageTransform.ForClip(fixture.GetProperty("size").GetInt32());
        var output = transform.Apply(images);
        Assert.That(output.shape, Is.EqualTo(TaskFixtures.Shape(fixture, "output_shape")));
        Assert.That(output.data<float>().ToArray(), Is.EqualTo(TaskFixtures.Floats(fixture, "output")).Within(1e-5f));
    }

    [Test]
    public void Apply_Normalise_LeavesInputUnchanged()
    {
        using var scope = NewDisposeScope();
        var images = full(1, 3, 2, 2, 0.5f);
        var output = new ImageTransform { Mean = [0.5f, 0.25f, 0f], Std = [1f, 0.5f, 2f] }.Apply(images);
        Assert.That(images.data<float>().ToArray(), Is.All.EqualTo(0.5f));
        // (0.5 − 0.5) / 1 = 0, (0.5 − 0.25) / 0.5 = 0.5, (0.5 − 0) / 2 = 0.25 per channel.
        Assert.That(output.data<float>().ToArray(), Is.EqualTo(new float[] { 0, 0, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f, 0.25f, 0.25f, 0.25f, 0.25f }));
    }

    [Test]
    public void Apply_MeanWithoutStd_ThrowsNamingOptions()
    {
        using var scope = NewDisposeScope();
        var transform = new ImageTransform { Mean = [0.5f] };
        var ex = Assert.Throws<ArgumentException>(() => transform.Apply(zeros(1, 1, 2, 2)));
        Assert.That(ex!.Message, Does.Contain("Mean").And.Contain("Std"));
    }

    [Test]
    public void Apply_MeanLengthDiffersFromChannels_Throws()
    {
        using var scope = NewDisposeScope();
        var transform = new ImageTransform { Mean = [0.5f, 0.5f], Std = [1f, 1f] };
        var ex = Assert.Throws<ArgumentException>(() => transform.Apply(zeros(1, 3, 2, 2)));
        Assert.That(ex!.Message, Does.Contain("Mean has 2 values").And.Contain("3 channels"));
    }

    [Test]
    public void Apply_RankThreeImages_ThrowsNamingImages()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => new ImageTransform().Apply(zeros(1, 2, 2)));
        Assert.That(ex!.ParamName, Is.EqualTo("images"));
    }
}
