using System.Text.Json.Nodes;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Training;

[TestFixture, NonParallelizable]
public sealed class TrainingCheckpointTests
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
    public void Checkpoint_LoadPretrainedOntoFreshModel_GivesIdenticalOutputs()
    {
        string checkpoint = folder.File("checkpoint");
        using var images = TinyClip.Images(5, 3);
        Tensor expected;
        using (var trained = fixture.Upscale())
        {
            var adaptable = trained;
            Train(adaptable, steps: 3, checkpoint);
            expected = adaptable.Features(images).detach();
        }

        using var fresh = fixture.Upscale();
        fresh.LoadPretrained(checkpoint);
        using var actual = fresh.Model.GetImageFeatures(images);
        Assert.That(actual.equal(expected).all().item<bool>(), Is.True);
    }

    [Test]
    public void Checkpoint_UpscaledModel_HoldsSavePretrainedFilesAdamStateAndTrainerState()
    {
        string checkpoint = folder.File("checkpoint");
        using var upscaled = fixture.Upscale();
        var adaptable = upscaled;
        Train(adaptable, steps: 2, checkpoint);
        var names = Directory.EnumerateFiles(checkpoint).Select(Path.GetFileName).ToList();
        Assert.That(names, Has.Member(UpscaledModelConfig.FileName).And.Member("optimizer.safetensors").And.Member("trainer_state.json"));
        using var optimizer = SafeTensorsFile.Open(Path.Combine(checkpoint, "optimizer.safetensors"));
        var parameterNames = adaptable.NamedTrainableParameters().Select(p => p.Key).ToList();
        Assert.That(optimizer.Names, Is.EquivalentTo(parameterNames.SelectMany(n => new[] { "exp_avg." + n, "exp_avg_sq." + n, "step." + n })));
        Assert.That(optimizer.Load("step." + parameterNames[0]).item<long>(), Is.EqualTo(2));
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, "trainer_state.json")))!;
        Assert.That((state["step"]!.GetValue<int>(), state["method"]!.GetValue<string>(), state["objective"]!.GetValue<string>()), Is.EqualTo((2, "WEMoE", "entropy")));
    }

    [Test]
    public void Checkpoint_AdamState_HoldsTheLiveMomentsNotZeros()
    {
        string checkpoint = folder.File("checkpoint");
        using var upscaled = fixture.Upscale();
        var adaptable = upscaled;
        Train(adaptable, steps: 2, checkpoint);
        using var optimizer = SafeTensorsFile.Open(Path.Combine(checkpoint, "optimizer.safetensors"));
        var (name, parameter) = adaptable.NamedTrainableParameters()[0];
        using var expAvg = optimizer.Load("exp_avg." + name);
        using var expAvgSq = optimizer.Load("exp_avg_sq." + name);
        Assert.That(expAvg.shape, Is.EqualTo(parameter.shape));
        Assert.That(expAvgSq.abs().sum().item<float>(), Is.GreaterThan(0));
        Assert.That(expAvgSq.min().item<float>(), Is.GreaterThanOrEqualTo(0));
    }

    [Test]
    public void Checkpoint_LoadsWithFromPretrainedOverThePool()
    {
        string checkpoint = folder.File("checkpoint");
        var pool = WeightEnsembling.Models.ModelPool.FromModels(fixture.Pretrained, fixture.Experts);
        using var images = TinyClip.Images(4, 9);
        Tensor expected;
        using (var trained = Upscaler.Upcycle(pool))
        {
            var adaptable = trained;
            Train(adaptable, steps: 2, checkpoint);
            expected = adaptable.Features(images).detach();
        }

        using var reloaded = UpscaledModel.FromPretrained(checkpoint, pool);
        using var actual = reloaded.Model.GetImageFeatures(images);
        Assert.That(actual.equal(expected).all().item<bool>(), Is.True);
    }

    [Test]
    public void Resume_OntoDifferentExperts_ThrowsNamingTheDifference()
    {
        string checkpoint = folder.File("checkpoint");
        using (var upscaled = fixture.Upscale())
        {
            Train(upscaled, steps: 1, checkpoint);
        }

        using var other = new TrainingFixture(expertSeed: 31);
        using var otherModel = other.Upscale();
        var options = TrainingFixture.Options(3);
        options.ResumeFrom = checkpoint;
        var error = Assert.Throws<InvalidDataException>(() => new AdaptationTrainer().Adapt(otherModel, other.Tasks, options));
        Assert.That(error!.Message, Does.Contain(checkpoint).And.Contain("expert"));
    }

    [Test]
    public void Resume_OntoDifferentRouterDepth_ThrowsNamingTheCheckpoint()
    {
        string checkpoint = folder.File("checkpoint");
        using (var upscaled = fixture.Upscale())
        {
            Train(upscaled, steps: 1, checkpoint);
        }

        using var linear = fixture.Upscale(u => u.WithRouterDepth(1));
        var options = TrainingFixture.Options(3);
        options.ResumeFrom = checkpoint;
        var error = Assert.Throws<InvalidDataException>(() => new AdaptationTrainer().Adapt(linear, fixture.Tasks, options));
        Assert.That(error!.Message, Does.Contain(checkpoint));
    }

    [Test]
    public void Resume_WithOtherSeed_ThrowsNamingSeed()
    {
        string checkpoint = folder.File("checkpoint");
        using var upscaled = fixture.Upscale();
        var adaptable = upscaled;
        Train(adaptable, steps: 1, checkpoint);
        var before = TrainingFixture.Snapshot(adaptable);
        var options = TrainingFixture.Options(3);
        options.Seed = 5;
        options.ResumeFrom = checkpoint;
        var error = Assert.Throws<InvalidDataException>(() => new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, options));
        Assert.That(error!.Message, Does.Contain("Seed: saved 0, this run 5"));
        Assert.That(TrainingFixture.BitEqual(before, TrainingFixture.Snapshot(adaptable)), Is.True);
    }

    [Test]
    public void Resume_FromSavePretrainedFolderWithoutTrainerState_ThrowsExplaining()
    {
        string saved = folder.File("saved");
        using var upscaled = fixture.Upscale();
        upscaled.SavePretrained(saved);
        var options = TrainingFixture.Options(3);
        options.ResumeFrom = saved;
        var error = Assert.Throws<InvalidDataException>(() => new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, options));
        Assert.That(error!.Message, Does.Contain(saved).And.Contain("trainer_state.json"));
    }

    [Test]
    public void Resume_CheckpointWithoutOptimizerState_ThrowsExplaining()
    {
        string checkpoint = folder.File("checkpoint");
        using var upscaled = fixture.Upscale();
        var adaptable = upscaled;
        Train(adaptable, steps: 1, checkpoint);
        File.Delete(Path.Combine(checkpoint, "optimizer.safetensors"));
        var options = TrainingFixture.Options(3);
        options.ResumeFrom = checkpoint;
        var error = Assert.Throws<InvalidDataException>(() => new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, options));
        Assert.That(error!.Message, Does.Contain("no optimizer state"));
    }

    [Test]
    public void Checkpoint_SavedTwice_FolderHoldsOnlyTheLatest()
    {
        string checkpoint = folder.File("checkpoint");
        using var upscaled = fixture.Upscale();
        var options = TrainingFixture.Options(4);
        options.CheckpointFolder = checkpoint;
        options.CheckpointInterval = 1;
        new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, options);
        var weights = Directory.EnumerateFiles(checkpoint, "weights-*.safetensors").ToList();
        Assert.That(weights, Has.Count.EqualTo(1));
        Assert.That(Directory.EnumerateFileSystemEntries(folder.Path).Select(Path.GetFileName), Is.EqualTo(new[] { "checkpoint" }));
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, "trainer_state.json")))!;
        Assert.That(state["step"]!.GetValue<int>(), Is.EqualTo(4));
    }

    private void Train(IAdaptableModel model, int steps, string checkpoint)
    {
        var options = TrainingFixture.Options(steps);
        options.CheckpointFolder = checkpoint;
        new AdaptationTrainer().Adapt(model, fixture.Tasks, options);
    }
}
