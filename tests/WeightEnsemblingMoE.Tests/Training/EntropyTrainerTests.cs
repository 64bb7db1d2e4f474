using TorchSharp;
using WeightEnsembling.Moe;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Training;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Training;

[TestFixture, NonParallelizable]
public sealed class EntropyTrainerTests
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
        var adaptable = new AdaptableUpscaledModel(upscaled);
        var routerKeys = adaptable.NamedTrainableParameters().Select(p => p.Key).ToHashSet();
        var before = upscaled.Model.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());
        new EntropyTrainer().Adapt(adaptable, fixture.Tasks, TrainingFixture.Options());
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
            var adaptable = new AdaptableUpscaledModel(upscaled);
            var options = TrainingFixture.Options(5);
            options.CosineSchedule = true;
            new EntropyTrainer().Adapt(adaptable, fixture.Tasks, options);
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
            var adaptable = new AdaptableUpscaledModel(upscaled);
            var options = TrainingFixture.Options(3);
            options.Seed = seed;
            new EntropyTrainer().Adapt(adaptable, fixture.Tasks, options);
            return TrainingFixture.Snapshot(adaptable);
        }

        Assert.That(TrainingFixture.BitEqual(Run(1), Run(2)), Is.False);
    }

    [Test]
    public void Adapt_CancelledDuringStepThree_StopsAfterStepThreeInEvaluationMode()
    {
        using var upscaled = fixture.Upscale();
        using var cancellation = new CancellationTokenSource();
        var progress = new SynchronousProgress(p =>
        {
            if (p.Step == 3)
            {
                cancellation.Cancel();
            }
        });
        var result = new EntropyTrainer().Adapt(new AdaptableUpscaledModel(upscaled), fixture.Tasks, TrainingFixture.Options(10), progress, cancellation.Token);
        Assert.That((result.Cancelled, result.StepsCompleted, progress.Reports.Count), Is.EqualTo((true, 3, 3)));
        Assert.That(upscaled.RoutingMode, Is.EqualTo(RoutingMode.PerSample));
    }

    [Test]
    public void Adapt_Progress_ReportsEveryStepWithEachTaskLoss()
    {
        using var upscaled = fixture.Upscale();
        var progress = new SynchronousProgress(_ => { });
        var options = TrainingFixture.Options(4);
        options.CosineSchedule = true;
        new EntropyTrainer().Adapt(new AdaptableUpscaledModel(upscaled), fixture.Tasks, options, progress);
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
            var adaptable = new AdaptableUpscaledModel(upscaled);
            new EntropyTrainer().Adapt(adaptable, fixture.Tasks, options);
            uninterrupted = TrainingFixture.Snapshot(adaptable);
        }

        using (var upscaled = fixture.Upscale())
        {
            var first = options.Clone();
            first.CheckpointPath = folder.File("tta.safetensors");
            first.CheckpointEvery = 3;
            using var cancellation = new CancellationTokenSource();
            var stopAtThree = new SynchronousProgress(p =>
            {
                if (p.Step == 3)
                {
                    cancellation.Cancel();
                }
            });
            new EntropyTrainer().Adapt(new AdaptableUpscaledModel(upscaled), fixture.Tasks, first, stopAtThree, cancellation.Token);
        }

        using var resumedModel = fixture.Upscale();
        var resumed = new AdaptableUpscaledModel(resumedModel);
        var second = options.Clone();
        second.ResumeFrom = folder.File("tta.safetensors");
        var result = new EntropyTrainer().Adapt(resumed, fixture.Tasks, second);
        Assert.That((result.StartStep, result.StepsCompleted), Is.EqualTo((3, 6)));
        Assert.That(TrainingFixture.BitEqual(uninterrupted, TrainingFixture.Snapshot(resumed)), Is.True);
    }

    [Test]
    public void Adapt_GradientsAccumulatedPerTask_MatchSummedLoss()
    {
        Dictionary<string, Tensor> Run(bool perTask)
        {
            using var upscaled = fixture.Upscale();
            var adaptable = new AdaptableUpscaledModel(upscaled);
            var options = TrainingFixture.Options(3);
            options.AccumulateGradientsPerTask = perTask;
            new EntropyTrainer().Adapt(adaptable, fixture.Tasks, options);
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
        new EntropyTrainer().Adapt(new AdaptableUpscaledModel(upscaled), fixture.Tasks, TrainingFixture.Options(60), progress);
        Assert.That(live[60], Is.EqualTo(live[10]));
    }

    [Test]
    public void Adapt_SharedRouterWithSparseTaskVectors_TrainsTheSharedRouter()
    {
        using var upscaled = fixture.Upscale(u => u.WithSharedRouter(positionEncoding: true).WithTaskVectorStorage(TaskVectorStorageOptions.Sparse(0.9)));
        var adaptable = new AdaptableUpscaledModel(upscaled);
        var before = TrainingFixture.Snapshot(adaptable);
        new EntropyTrainer().Adapt(adaptable, fixture.Tasks, TrainingFixture.Options(2));
        Assert.That(adaptable.Method, Is.EqualTo("E-WEMoE"));
        Assert.That(before.Keys.All(k => k.StartsWith("vision_model.encoder.layers.0.", StringComparison.Ordinal)), Is.True);
        Assert.That(TrainingFixture.BitEqual(before, TrainingFixture.Snapshot(adaptable)), Is.False);
    }

    [Test]
    public void Adapt_LowRankTaskVectorsAndLinearRouters_ChangesRouters()
    {
        using var upscaled = fixture.Upscale(u => u.WithRouterDepth(1).WithTaskVectorStorage(TaskVectorStorageOptions.LowRank(2)));
        var adaptable = new AdaptableUpscaledModel(upscaled);
        var before = TrainingFixture.Snapshot(adaptable);
        new EntropyTrainer().Adapt(adaptable, fixture.Tasks, TrainingFixture.Options(2));
        Assert.That(TrainingFixture.BitEqual(before, TrainingFixture.Snapshot(adaptable)), Is.False);
    }

    [Test]
    public void Adapt_ZeroStepsOption_ThrowsNamingSteps()
    {
        using var upscaled = fixture.Upscale();
        var options = TrainingFixture.Options(0);
        var error = Assert.Throws<ArgumentException>(() => new EntropyTrainer().Adapt(new AdaptableUpscaledModel(upscaled), fixture.Tasks, options));
        Assert.That(error!.ParamName, Is.EqualTo("Steps"));
    }

    [Test]
    public void Adapt_HeadWithWrongClassCount_ThrowsNamingTask()
    {
        using var upscaled = fixture.Upscale();
        using var head = new WeightEnsembling.Tasks.LinearClassificationHead(8, 5);
        var tasks = new[] { fixture.Tasks[0] with { Head = head } };
        var error = Assert.Throws<ArgumentException>(() => new EntropyTrainer().Adapt(new AdaptableUpscaledModel(upscaled), tasks, TrainingFixture.Options()));
        Assert.That(error!.Message, Does.Contain("'t0'").And.Contain("5 classes"));
    }

    [Test]
    public void Adam_SameGradients_MatchesTorchSharpAdam()
    {
        using var ours = new TorchSharp.Modules.Parameter(tensor(new float[] { 1f, -2f, 3f }));
        using var theirs = new TorchSharp.Modules.Parameter(tensor(new float[] { 1f, -2f, 3f }));
        using var adam = new AdamOptimizer([KeyValuePair.Create("p", ours)], 0.9, 0.999, 1e-8);
        using var reference = optim.Adam([theirs], lr: 0.1);
        for (int step = 0; step < 5; step++)
        {
            using var scope = NewDisposeScope();
            adam.ZeroGrad();
            reference.zero_grad();
            (ours * ours * ours).sum().backward();
            (theirs * theirs * theirs).sum().backward();
            adam.Step(0.1);
            reference.step();
        }

        Assert.That(ours.allclose(theirs, rtol: 0, atol: 1e-6), Is.True, $"{ours.str()} vs {theirs.str()}");
    }

    [Test]
    public void LearningRateAt_Cosine_FollowsCosineAnnealing()
    {
        var options = new TestTimeAdaptationOptions { LearningRate = 1e-3, Steps = 10, CosineSchedule = true };
        Assert.That(options.LearningRateAt(0), Is.EqualTo(1e-3));
        Assert.That(options.LearningRateAt(5), Is.EqualTo(5e-4).Within(1e-12));
        Assert.That(options.LearningRateAt(10), Is.EqualTo(0).Within(1e-12));
    }

    [Test]
    public void Options_Defaults_AreFusionBenchs()
    {
        var options = new TestTimeAdaptationOptions();
        Assert.That((options.LearningRate, options.Steps, options.BatchSize), Is.EqualTo((1e-4, 1000, 16)));
        Assert.That(TestTimeAdaptationOptions.ForAdaMerging().LearningRate, Is.EqualTo(1e-3));
    }

    private sealed class SynchronousProgress(Action<TestTimeAdaptationProgress> onReport) : IProgress<TestTimeAdaptationProgress>
    {
        public List<TestTimeAdaptationProgress> Reports { get; } = [];

        public void Report(TestTimeAdaptationProgress value)
        {
            Reports.Add(value);
            onReport(value);
        }
    }
}
