using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Training;

[TestFixture, NonParallelizable]
public sealed class AdaptationCheckpointTests
{
    private TrainingFixture fixture = null!;
    private TempFolder folder = null!;

    [SetUp]
    public void SetUp()
    {
        fixture = new TrainingFixture();
        folder = new TempFolder();
    }

    [TearDown]
    public void TearDown()
    {
        fixture.Dispose();
        folder.Dispose();
    }

    [Test]
    public void SaveThenLoad_OntoFreshModel_GivesIdenticalOutputs()
    {
        string path = folder.File("routers.safetensors");
        using var images = TinyClip.Images(5, 3);
        Tensor expected;
        using (var trained = fixture.Upscale())
        {
            var adaptable = new AdaptableUpscaledModel(trained);
            var options = TrainingFixture.Options(3);
            options.CheckpointPath = path;
            new EntropyTrainer().Adapt(adaptable, fixture.Tasks, options);
            expected = adaptable.Features(images).detach();
        }

        using var fresh = fixture.Upscale();
        var loaded = new AdaptableUpscaledModel(fresh);
        var info = AdaptationCheckpoint.Load(path, loaded);
        using var actual = loaded.Features(images);
        Assert.That(actual.equal(expected).all().item<bool>(), Is.True);
        Assert.That((info.Step, info.Method, info.HasOptimizerState, info.Options.Steps), Is.EqualTo((3, "WEMoE", true, 3)));
    }

    [Test]
    public void Save_UpscaledModel_HoldsRouterParametersAndMomentsOnly()
    {
        string path = folder.File("routers.safetensors");
        using var upscaled = fixture.Upscale();
        var options = TrainingFixture.Options(1);
        options.CheckpointPath = path;
        new EntropyTrainer().Adapt(new AdaptableUpscaledModel(upscaled), fixture.Tasks, options);
        using var file = SafeTensorsFile.Open(path);
        var parameters = file.Names.Where(n => !n.StartsWith("optimizer.", StringComparison.Ordinal)).ToList();
        Assert.That(parameters, Has.Count.EqualTo(8).And.All.Contains(".gate."));
        Assert.That(file.Names, Has.Count.EqualTo(24));
    }

    [Test]
    public void Load_OntoDifferentExperts_ThrowsNamingFingerprint()
    {
        string path = folder.File("routers.safetensors");
        using (var upscaled = fixture.Upscale())
        {
            AdaptationCheckpoint.Save(path, new AdaptableUpscaledModel(upscaled), step: 0);
        }

        using var other = new TrainingFixture(expertSeed: 31);
        using var otherModel = other.Upscale();
        var error = Assert.Throws<InvalidDataException>(() => AdaptationCheckpoint.Load(path, new AdaptableUpscaledModel(otherModel)));
        Assert.That(error!.Message, Does.Contain(path).And.Contain("other weights").And.Contain("experts"));
    }

    [Test]
    public void Load_OntoDifferentRouterDepthWithSameWeights_ThrowsNamingParameter()
    {
        string path = folder.File("routers.safetensors");
        using (var upscaled = fixture.Upscale())
        {
            AdaptationCheckpoint.Save(path, new AdaptableUpscaledModel(upscaled), step: 0);
        }

        using var linear = fixture.Upscale(u => u.WithRouterDepth(1));
        var error = Assert.Throws<InvalidDataException>(() => AdaptationCheckpoint.Load(path, new AdaptableUpscaledModel(linear)));
        Assert.That(error!.Message, Does.Contain(path));
    }

    [Test]
    public void Load_HeadFileInsteadOfCheckpoint_ThrowsNamingFile()
    {
        string path = folder.File("head.safetensors");
        fixture.Tasks[0].Head.Save(path);
        using var upscaled = fixture.Upscale();
        var error = Assert.Throws<InvalidDataException>(() => AdaptationCheckpoint.Load(path, new AdaptableUpscaledModel(upscaled)));
        Assert.That(error!.Message, Does.Contain(path).And.Contain("not a test-time adaptation checkpoint"));
    }

    [Test]
    public void Resume_FromCheckpointWithoutMoments_ThrowsExplaining()
    {
        string path = folder.File("routers.safetensors");
        using var upscaled = fixture.Upscale();
        var adaptable = new AdaptableUpscaledModel(upscaled);
        AdaptationCheckpoint.Save(path, adaptable, step: 1);
        var options = TrainingFixture.Options(3);
        options.ResumeFrom = path;
        var error = Assert.Throws<InvalidDataException>(() => new EntropyTrainer().Adapt(adaptable, fixture.Tasks, options));
        Assert.That(error!.Message, Does.Contain("no optimizer state"));
    }
}
