using TorchSharp;
using WeightEnsembling.Moe;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Training;

[TestFixture, NonParallelizable]
public sealed class AdaptationTrainerTests
{
    private TrainingFixture fixture = null!;

    [SetUp]
    public void SetUp() => fixture = new TrainingFixture();

    [TearDown]
    public void TearDown() => fixture.Dispose();

    [Test]
    public void Adapt_UpscaledModel_ChangesRoutersAndNothingElse()
    {
        using var upscaled = fixture.Upscale();
        var adaptable = upscaled;
        var routerKeys = adaptable.NamedTrainableParameters().Select(p => p.Key).ToHashSet();
        var before = upscaled.Model.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());
        new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, TrainingFixture.Options());
        foreach (var (key, tensor) in upscaled.Model.state_dict())
        {
            bool unchanged = tensor.equal(before[key]).all().item<bool>();
            Assert.That(unchanged, Is.EqualTo(!key.Contains(".gate.")), key);
        }

        Assert.That(routerKeys, Has.Count.EqualTo(8));
    }

    [Test]
    public void Adapt_SameSeed_GivesBitIdenticalRouters()
    {
        Dictionary<string, Tensor> Run()
        {
            using var upscaled = fixture.Upscale();
            var adaptable = upscaled;
            var options = TrainingFixture.Options(5);
            options.CosineSchedule = true;
            new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, options);
            return TrainingFixture.Snapshot(adaptable);
        }

        Assert.That(TrainingFixture.BitEqual(Run(), Run()), Is.True);
    }

    [Test]
    public void Adapt_DifferentSeed_GivesDifferentRouters()
    {
        Dictionary<string, Tensor> Run(int seed)
        {
            using var upscaled = fixture.Upscale();
            var adaptable = upscaled;
            var options = TrainingFixture.Options(3);
            options.Seed = seed;
            new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, options);
            return TrainingFixture.Snapshot(adaptable);
        }

        Assert.That(TrainingFixture.BitEqual(Run(1), Run(2)), Is.False);
    }

    [Test]
    public void Adapt_CancelledDuringStepThree_ThrowsAfterStepThreeInEvaluationMode()
    {
        using var upscaled = fixture.Upscale();
        var adaptable = upscaled;
        using var cancellation = new CancellationTokenSource();
        Dictionary<string, Tensor>? atStepThree = null;
        var progress = new SynchronousProgress(p =>
        {
            if (p.Step == 3)
            {
                atStepThree = TrainingFixture.Snapshot(adaptable);
                cancellation.Cancel();
            }
        });
        Assert.Throws<OperationCanceledException>(() => new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, TrainingFixture.Options(10), progress, cancellation.Token));
        Assert.That(progress.Reports, Has.Count.EqualTo(3));
        Assert.That(TrainingFixture.BitEqual(atStepThree!, TrainingFixture.Snapshot(adaptable)), Is.True);
        Assert.That(upscaled.RoutingMode, Is.EqualTo(RoutingMode.PerSample));
    }

    [Test]
    public void Adapt_Progress_ReportsEveryStepWithEachTaskLoss()
    {
        using var upscaled = fixture.Upscale();
        var progress = new SynchronousProgress(_ => { });
        var options = TrainingFixture.Options(4);
        options.CosineSchedule = true;
        new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, options, progress);
        Assert.That(progress.Reports.Select(r => r.Step), Is.EqualTo(new[] { 1, 2, 3, 4 }));
        Assert.That(progress.Reports[0].Losses.Keys, Is.EquivalentTo(new[] { "t0", "t1" }));
        Assert.That(progress.Reports.All(r => r.Losses.Values.All(l => l > 0 && l <= Math.Log(3) + 1e-6)), Is.True);
        Assert.That(progress.Reports[0].LearningRate, Is.EqualTo(1e-2));
        Assert.That(progress.Reports[^1].Eta, Is.EqualTo(TimeSpan.Zero));
    }

    [Test]
    public void Adapt_ResumedFromCheckpoint_EqualsUninterruptedRunBitForBit()
    {
        using var folder = new TempFolder();
        var options = TrainingFixture.Options(6);
        options.CosineSchedule = true;
        Dictionary<string, Tensor> uninterrupted;
        using (var upscaled = fixture.Upscale())
        {
            var adaptable = upscaled;
            new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, options);
            uninterrupted = TrainingFixture.Snapshot(adaptable);
        }

        using (var upscaled = fixture.Upscale())
        {
            // Stopped after step 3 of 6 (cancelled right after the interval checkpoint), so the cosine schedule is the same.
            var first = options.Clone();
            first.CheckpointFolder = folder.File("checkpoint");
            first.CheckpointInterval = 3;
            using var cancellation = new CancellationTokenSource();
            var stopAtThree = new SynchronousProgress(p =>
            {
                if (p.Step == 3)
                {
                    Assert.That(p.Checkpoint, Is.EqualTo(first.CheckpointFolder));
                    cancellation.Cancel();
                }
            });
            Assert.Throws<OperationCanceledException>(() => new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, first, stopAtThree, cancellation.Token));
        }

        using var resumedModel = fixture.Upscale();
        var resumed = resumedModel;
        var second = options.Clone();
        second.ResumeFrom = folder.File("checkpoint");
        var result = new AdaptationTrainer().Adapt(resumed, fixture.Tasks, second);
        Assert.That((result.StartStep, result.StepsCompleted), Is.EqualTo((3, 6)));
        Assert.That(TrainingFixture.BitEqual(uninterrupted, TrainingFixture.Snapshot(resumed)), Is.True);
    }

    [Test]
    public void Adapt_CancelledWithCheckpointFolder_SavesCheckpointThatResumesBitForBit()
    {
        using var folder = new TempFolder();
        var options = TrainingFixture.Options(6);
        Dictionary<string, Tensor> uninterrupted;
        using (var upscaled = fixture.Upscale())
        {
            var adaptable = upscaled;
            new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, options);
            uninterrupted = TrainingFixture.Snapshot(adaptable);
        }

        using (var upscaled = fixture.Upscale())
        {
            var first = options.Clone();
            first.CheckpointFolder = folder.File("checkpoint");
            using var cancellation = new CancellationTokenSource();
            var stopAtTwo = new SynchronousProgress(p =>
            {
                if (p.Step == 2)
                {
                    cancellation.Cancel();
                }
            });
            Assert.Throws<OperationCanceledException>(() => new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, first, stopAtTwo, cancellation.Token));
        }

        using var resumedModel = fixture.Upscale();
        var resumed = resumedModel;
        var second = options.Clone();
        second.ResumeFrom = folder.File("checkpoint");
        var result = new AdaptationTrainer().Adapt(resumed, fixture.Tasks, second);
        Assert.That(result.StartStep, Is.EqualTo(2));
        Assert.That(TrainingFixture.BitEqual(uninterrupted, TrainingFixture.Snapshot(resumed)), Is.True);
    }

    [Test]
    public void Adapt_GradientsAccumulatedPerTask_MatchSummedLoss()
    {
        Dictionary<string, Tensor> Run(bool perTask)
        {
            using var upscaled = fixture.Upscale();
            var adaptable = upscaled;
            var options = TrainingFixture.Options(3);
            options.Objective = new EntropyObjective { AccumulateGradientsPerTask = perTask };
            new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, options);
            return TrainingFixture.Snapshot(adaptable);
        }

        var summed = Run(false);
        var accumulated = Run(true);
        foreach (var (key, tensor) in summed)
        {
            Assert.That(tensor.allclose(accumulated[key], rtol: 1e-4, atol: 1e-6), Is.True, key);
        }
    }

    [Test]
    public void Adapt_ManySteps_KeepsLiveTensorCountFlat()
    {
        using var upscaled = fixture.Upscale();
        var live = new Dictionary<int, long>();
        var progress = new SynchronousProgress(p => live[p.Step] = DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, TrainingFixture.Options(60), progress);
        Assert.That(live[60], Is.EqualTo(live[10]));
    }

    [Test]
    public void Adapt_SharedRouterWithSparseTaskVectors_TrainsTheSharedRouter()
    {
        using var upscaled = fixture.Upscale(u => u.WithSharedRouter(positionEncoding: true).WithTaskVectorStorage(TaskVectorStorageOptions.Sparse(0.9)));
        var adaptable = upscaled;
        var before = TrainingFixture.Snapshot(adaptable);
        new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, TrainingFixture.Options(2));
        Assert.That(adaptable.Method, Is.EqualTo("E-WEMoE"));
        Assert.That(before.Keys.All(k => k.StartsWith("vision_model.encoder.layers.0.", StringComparison.Ordinal)), Is.True);
        Assert.That(TrainingFixture.BitEqual(before, TrainingFixture.Snapshot(adaptable)), Is.False);
    }

    [Test]
    public void Adapt_LowRankTaskVectorsAndLinearRouters_ChangesRouters()
    {
        using var upscaled = fixture.Upscale(u => u.WithRouterDepth(1).WithTaskVectorStorage(TaskVectorStorageOptions.LowRank(2)));
        var adaptable = upscaled;
        var before = TrainingFixture.Snapshot(adaptable);
        new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, TrainingFixture.Options(2));
        Assert.That(TrainingFixture.BitEqual(before, TrainingFixture.Snapshot(adaptable)), Is.False);
    }

    [Test]
    public void Adapt_ZeroStepsOption_ThrowsNamingSteps()
    {
        using var upscaled = fixture.Upscale();
        var options = TrainingFixture.Options(0);
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, options));
        Assert.That(error!.ParamName, Is.EqualTo("Steps"));
    }

    [Test]
    public void Adapt_HeadWithWrongClassCount_ThrowsNamingTask()
    {
        using var upscaled = fixture.Upscale();
        using var head = new WeightEnsembling.Tasks.LinearClassificationHead(8, 5);
        var tasks = new[] { fixture.Tasks[0] with { Head = head } };
        var error = Assert.Throws<ArgumentException>(() => new AdaptationTrainer().Adapt(upscaled, tasks, TrainingFixture.Options()));
        Assert.That(error!.Message, Does.Contain("'t0'").And.Contain("5 classes"));
    }

    [Test]
    public void Adapt_EntropyObjectiveOnParetoWrapperWithPreference_Runs()
    {
        using var pareto = ModelUpscaler.For(fixture.Pretrained).WithExperts(fixture.Experts).BuildPareto();
        var adaptable = pareto;
        adaptable.SetPreference([0.5, 0.5]);
        var before = TrainingFixture.Snapshot(adaptable);
        new AdaptationTrainer().Adapt(adaptable, fixture.Tasks, TrainingFixture.Options(2));
        Assert.That(TrainingFixture.BitEqual(before, TrainingFixture.Snapshot(adaptable)), Is.False);
    }

    [Test]
    public void Adapt_ParetoObjectiveOnUpscaledModel_ThrowsNamingModel()
    {
        using var upscaled = fixture.Upscale();
        var options = TrainingFixture.Options(1);
        options.Objective = new ParetoObjective();
        var error = Assert.Throws<ArgumentException>(() => new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, options));
        Assert.That(error!.Message, Does.Contain("preference-conditioned").And.Contain("WEMoE"));
    }

    [Test]
    public void LearningRateAt_Cosine_FollowsCosineAnnealing()
    {
        var options = new AdaptationOptions { LearningRate = 1e-3, Steps = 10, CosineSchedule = true };
        Assert.That(options.LearningRateAt(0), Is.EqualTo(1e-3));
        Assert.That(options.LearningRateAt(5), Is.EqualTo(5e-4).Within(1e-12));
        Assert.That(options.LearningRateAt(10), Is.EqualTo(0).Within(1e-12));
    }

    [Test]
    public void LearningRateAt_CosineWithFloor_FollowsCosineAnnealingToEtaMin()
    {
        // PyTorch: CosineAnnealingLR(T_max=10, eta_min=0.1 * 0.02) gives 0.02, 0.011 and 0.002 at epochs 0, 5 and 10.
        var options = new AdaptationOptions { LearningRate = 0.02, Steps = 10, CosineSchedule = true, MinLearningRateRatio = 0.1 };
        Assert.That(options.LearningRateAt(0), Is.EqualTo(0.02).Within(1e-15));
        Assert.That(options.LearningRateAt(5), Is.EqualTo(0.011).Within(1e-15));
        Assert.That(options.LearningRateAt(10), Is.EqualTo(0.002).Within(1e-15));
    }

    [Test]
    public void Options_Defaults_AreFusionBenchs()
    {
        var options = new AdaptationOptions();
        Assert.That((options.LearningRate, options.Steps, options.BatchSize, options.CosineSchedule), Is.EqualTo((1e-4, 1000, 16, false)));
        Assert.That(options.Objective, Is.InstanceOf<EntropyObjective>());
        Assert.That(AdaptationOptions.ForAdaMerging().LearningRate, Is.EqualTo(1e-3));
        var pwemoe = AdaptationOptions.ForPwemoe();
        Assert.That((pwemoe.LearningRate, pwemoe.Steps, pwemoe.Seed, pwemoe.MinLearningRateRatio, pwemoe.Objective.Name), Is.EqualTo((1e-2, 2000, 42, 0.1, "pareto-ls")));
    }

    [TestCase(nameof(AdaptationOptions.Steps))]
    [TestCase(nameof(AdaptationOptions.MinLearningRateRatio))]
    [TestCase(nameof(ParetoObjective.DirichletAlpha))]
    public void Validate_BadOption_ThrowsNamingIt(string option)
    {
        var options = option switch
        {
            nameof(AdaptationOptions.Steps) => new AdaptationOptions { Steps = 0 },
            nameof(AdaptationOptions.MinLearningRateRatio) => new AdaptationOptions { MinLearningRateRatio = -1 },
            _ => new AdaptationOptions { Objective = new ParetoObjective { DirichletAlpha = -1 } },
        };
        var error = Assert.Throws<ArgumentOutOfRangeException>(options.Validate);
        Assert.That(error!.ParamName, Is.EqualTo(option));
    }

    private sealed class SynchronousProgress(Action<AdaptationProgress> onReport) : IProgress<AdaptationProgress>
    {
        public List<AdaptationProgress> Reports { get; } = [];

        public void Report(AdaptationProgress value)
        {
            Reports.Add(value);
            onReport(value);
        }
    }
}
