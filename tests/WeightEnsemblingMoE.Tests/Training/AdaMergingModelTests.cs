using WeightEnsembling.Merging;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Training;

[TestFixture, NonParallelizable]
public sealed class AdaMergingModelTests
{
    private TrainingFixture fixture = null!;

    [SetUp]
    public void SetUp() => fixture = new TrainingFixture();

    [TearDown]
    public void TearDown() => fixture.Dispose();

    [Test]
    public void Features_AtInitialLambda_EqualTaskArithmeticModel()
    {
        using var adaMerging = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts);
        var experts = fixture.Experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.state_dict()).ToList();
        using var taskArithmetic = TinyClip.WithWeights(StateDictMerging.TaskArithmetic(fixture.Pretrained.state_dict(), experts, 0.3));
        using var images = TinyClip.Images(4, 5);
        using var expected = taskArithmetic.GetImageFeatures(images);
        using var actual = adaMerging.Features(images);
        Assert.That(TinyClip.MaxDifference(actual, expected), Is.LessThan(1e-5));
    }

    [Test]
    public void Adapt_LayerWise_TrainsOneLambdaPerTaskPerTensor()
    {
        using var adaMerging = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts);
        var before = adaMerging.MergeWeight.detach().clone();
        new AdaptationTrainer().Adapt(adaMerging, fixture.Tasks, TrainingFixture.Options(2));
        Assert.That(adaMerging.MergeWeight.shape, Is.EqualTo(new long[] { fixture.Pretrained.state_dict().Count, 2 }));
        // Every parameter tensor, embeddings and layer norms included, gets a gradient.
        Assert.That(adaMerging.MergeWeight.ne(before).all().item<bool>(), Is.True);
    }

    [Test]
    public void Adapt_TaskWise_TrainsOneLambdaPerTask()
    {
        using var adaMerging = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts, new AdaMergingOptions { Granularity = AdaMergingGranularity.TaskWise });
        new AdaptationTrainer().Adapt(adaMerging, fixture.Tasks, TrainingFixture.Options(2));
        Assert.That(adaMerging.MergeWeight.shape, Is.EqualTo(new long[] { 2 }));
        Assert.That(adaMerging.MergeWeight.ne(0.3f).all().item<bool>(), Is.True);
        Assert.That(adaMerging.Method, Is.EqualTo("AdaMerging (task-wise)"));
    }

    [Test]
    public void MergeAndUnload_AfterAdaptation_EqualsFunctionalFeatures()
    {
        using var adaMerging = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts);
        new AdaptationTrainer().Adapt(adaMerging, fixture.Tasks, TrainingFixture.Options(2));
        using var plain = adaMerging.MergeAndUnload();
        using var images = TinyClip.Images(4, 6);
        using var expected = adaMerging.Features(images);
        using var actual = plain.GetImageFeatures(images);
        Assert.That(TinyClip.MaxDifference(actual, expected), Is.LessThan(1e-5));
    }

    [Test]
    public void MergedWeights_WithClamp_ClampsLambdaToUnitInterval()
    {
        using var clamped = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts, new AdaMergingOptions { InitLambda = 2.5, Clamp = true });
        using var one = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts, new AdaMergingOptions { InitLambda = 1.0 });
        var a = clamped.MergedWeights();
        var b = one.MergedWeights();
        Assert.That(a.All(p => p.Value.equal(b[p.Key]).all().item<bool>()), Is.True);
    }

    [Test]
    public void Resume_CheckpointOfOtherExperts_ThrowsNamingTheExperts()
    {
        using var folder = new TempFolder();
        var options = AdaptationOptions.ForAdaMerging();
        options.Steps = 1;
        options.BatchSize = 8;
        options.CheckpointFolder = folder.File("checkpoint");
        using (var adaMerging = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts))
        {
            new AdaptationTrainer().Adapt(adaMerging, fixture.Tasks, options);
        }

        using var other = new TrainingFixture(expertSeed: 41);
        using var otherModel = AdaMergingModel.Create(other.Pretrained, other.Experts);
        var resume = AdaptationOptions.ForAdaMerging();
        resume.Steps = 2;
        resume.BatchSize = 8;
        resume.ResumeFrom = folder.File("checkpoint");
        var error = Assert.Throws<InvalidDataException>(() => new AdaptationTrainer().Adapt(otherModel, other.Tasks, resume));
        Assert.That(error!.Message, Does.Contain(folder.File("checkpoint")).And.Contain("expert"));
    }

    [Test]
    public void Adapt_ResumedHalfway_EqualsUninterruptedRunBitForBit()
    {
        using var folder = new TempFolder();
        var options = AdaptationOptions.ForAdaMerging();
        options.Steps = 4;
        options.BatchSize = 8;
        options.CosineSchedule = true;
        Dictionary<string, Tensor> straight;
        using (var model = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts))
        {
            new AdaptationTrainer().Adapt(model, fixture.Tasks, options);
            straight = TrainingFixture.Snapshot(model);
        }

        using (var model = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts))
        {
            var first = options.Clone();
            first.CheckpointFolder = folder.File("checkpoint");
            first.CheckpointInterval = 2;
            using var cancellation = new CancellationTokenSource();
            var stop = new Progress(p =>
            {
                if (p.Step == 2)
                {
                    cancellation.Cancel();
                }
            });
            Assert.Throws<OperationCanceledException>(() => new AdaptationTrainer().Adapt(model, fixture.Tasks, first, stop, cancellation.Token));
        }

        using var resumed = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts);
        var second = options.Clone();
        second.ResumeFrom = folder.File("checkpoint");
        new AdaptationTrainer().Adapt(resumed, fixture.Tasks, second);
        Assert.That(TrainingFixture.BitEqual(straight, TrainingFixture.Snapshot(resumed)), Is.True);
    }

    private sealed class Progress(Action<AdaptationProgress> onReport) : IProgress<AdaptationProgress>
    {
        public void Report(AdaptationProgress value) => onReport(value);
    }

    [Test]
    public void Create_ExpertWithOtherShape_ThrowsNamingExpertAndTensor()
    {
        using var wide = TinyClip.Pretrained(config: TinyClip.Config with { IntermediateSize = 24 });
        var error = Assert.Throws<ArgumentException>(() => AdaMergingModel.Create(fixture.Pretrained, [fixture.Experts[0], wide]));
        Assert.That(error!.Message, Does.Contain("expert_1").And.Contain("fc1.weight"));
    }
}
