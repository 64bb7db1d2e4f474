using WeightEnsembling.Pareto;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Tests.Training;
using WeightEnsembling.Training;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Pareto;

[TestFixture, NonParallelizable]
public sealed class ParetoObjectiveTests
{
    [Test]
    public void Train_LinearScalarization_PreferenceTowardTaskImprovesThatTask()
    {
        using var tasks = new SyntheticTasks();
        using var model = tasks.BuildPareto();
        Train(model, tasks, Options(ParetoScalarization.LinearScalarization));
        var report = ParetoSetEvaluator.Evaluate(model, tasks.Tasks, [[0.9, 0.1], [0.1, 0.9]], batchSize: 48);
        var towardTask0 = report.Points[0];
        var towardTask1 = report.Points[1];
        Assert.That(towardTask0.Losses[0], Is.LessThan(towardTask1.Losses[0] - 0.05));
        Assert.That(towardTask1.Losses[1], Is.LessThan(towardTask0.Losses[1] - 0.05));
    }

    [Test]
    public void Train_LinearScalarization_ImprovesOnInitialTaskArithmetic()
    {
        using var tasks = new SyntheticTasks();
        using var model = tasks.BuildPareto();
        var before = ParetoSetEvaluator.Evaluate(model, tasks.Tasks, [[0.5, 0.5]], batchSize: 48).Points[0];
        Train(model, tasks, Options(ParetoScalarization.LinearScalarization));
        var after = ParetoSetEvaluator.Evaluate(model, tasks.Tasks, [[0.5, 0.5]], batchSize: 48).Points[0];
        Assert.That(after.Losses.Sum(), Is.LessThan(before.Losses.Sum()));
    }

    [Test]
    public void Train_Epo_RunsWithExactLpsAndPreferenceTowardTaskImprovesThatTask()
    {
        // The reference's Hugging Face CLIP variant of EPO does not run; this one must. On these synthetic tasks EPO's
        // front is dominated by LS's at equal step counts (balance steps put all weight on one task, and at the simplex
        // corners the balance LP's objective vanishes), so only EPO's own behaviour is asserted.
        using var tasks = new SyntheticTasks();
        using var model = tasks.BuildPareto();
        var history = Train(model, tasks, Options(ParetoScalarization.ExactParetoOptimal));
        Assert.That(history.Select(h => h.EpoMove), Has.All.Not.Null);
        Assert.That(history.Select(h => h.EpoMove), Has.Some.EqualTo(EpoMove.Balance));
        Assert.That(history.Select(h => h.EpoMove), Has.None.EqualTo(EpoMove.PreferenceFallback));
        Assert.That(history.Select(h => h.Loss), Has.All.Matches<double>(double.IsFinite));
        var report = ParetoSetEvaluator.Evaluate(model, tasks.Tasks, [[0.8, 0.2], [0.2, 0.8]], batchSize: 48);
        Assert.That(report.Points[0].Losses[0], Is.LessThan(report.Points[1].Losses[0] - 0.05));
        Assert.That(report.Points[1].Losses[1], Is.LessThan(report.Points[0].Losses[1] - 0.05));
    }

    [Test]
    public void Train_LinearScalarization_ReportsPreferenceAndWeightedLoss()
    {
        using var tasks = new SyntheticTasks(examples: 16);
        using var model = tasks.BuildPareto();
        var history = Train(model, tasks, new AdaptationOptions { Objective = new ParetoObjective(), Steps = 2, BatchSize = 8, LearningRate = 1e-2 });
        foreach (var step in history)
        {
            var preference = step.Preference!;
            Assert.That(preference.Sum(), Is.EqualTo(1).Within(1e-12));
            double weighted = (preference[0] * step.Losses["task0"]) + (preference[1] * step.Losses["task1"]);
            Assert.That(step.Loss, Is.EqualTo(weighted).Within(1e-5));
            Assert.That(step.EpoMove, Is.Null);
        }
    }

    [Test]
    public void GradientGram_TwoLosses_EqualsHandComputedInnerProducts()
    {
        // w = (1, 2): ∇(3 w_0) = (3, 0), ∇(w·w) = (2, 4); G·Gᵀ = [[9, 6], [6, 20]].
        using var w = tensor(new[] { 1.0f, 2.0f }).requires_grad_(true);
        using var l1 = (w * tensor(new[] { 3.0f, 0.0f })).sum();
        using var l2 = (w * w).sum();
        var gram = ParetoObjective.GradientGram([l1, l2], [w]);
        Assert.That(gram, Is.EqualTo(new double[,] { { 9, 6 }, { 6, 20 } }).Within(1e-6));
    }

    [TestCase(ParetoScalarization.LinearScalarization)]
    [TestCase(ParetoScalarization.ExactParetoOptimal)]
    public void Train_ResumedHalfway_EqualsUninterruptedRunBitForBit(ParetoScalarization scalarization)
    {
        using var folder = new TempFolder();
        using var tasks = new SyntheticTasks(examples: 16);
        var options = new AdaptationOptions
        {
            Objective = new ParetoObjective { Scalarization = scalarization },
            Steps = 6,
            BatchSize = 8,
            LearningRate = 1e-2,
            CosineSchedule = true,
            MinLearningRateRatio = 0.1,
            Seed = 3,
        };
        Dictionary<string, Tensor> straight;
        IReadOnlyList<AdaptationProgress> straightHistory;
        using (var model = tasks.BuildPareto())
        {
            var adaptable = model;
            straightHistory = Train(model, tasks, options);
            straight = TrainingFixture.Snapshot(adaptable);
        }

        using (var model = tasks.BuildPareto())
        {
            // Stopped after step 3 of 6, so the cosine schedule is the same as the uninterrupted run's.
            var first = options.Clone();
            first.CheckpointFolder = folder.File("checkpoint");
            first.CheckpointInterval = 3;
            using var cancellation = new CancellationTokenSource();
            var history = new List<AdaptationProgress>();
            var stop = new Recorder(history, p =>
            {
                if (p.Step == 3)
                {
                    cancellation.Cancel();
                }
            });
            Assert.Throws<OperationCanceledException>(() => new AdaptationTrainer().Adapt(model, tasks.Tasks, first, stop, cancellation.Token));
        }

        using var resumedModel = tasks.BuildPareto();
        var resumed = resumedModel;
        var second = options.Clone();
        second.ResumeFrom = folder.File("checkpoint");
        var resumedHistory = Train(resumedModel, tasks, second);
        Assert.That(resumedHistory.Select(h => h.Preference), Is.EqualTo(straightHistory.Skip(3).Select(h => h.Preference)));
        Assert.That(TrainingFixture.BitEqual(straight, TrainingFixture.Snapshot(resumed)), Is.True);
    }

    [Test]
    public void Train_WithCheckpointFolder_WritesRoutersThatFromPretrainedReloads()
    {
        using var folder = new TempFolder();
        using var tasks = new SyntheticTasks(examples: 16);
        using var model = tasks.BuildPareto();
        var options = new AdaptationOptions { Objective = new ParetoObjective(), Steps = 4, BatchSize = 8, CheckpointFolder = folder.File("checkpoint"), CheckpointInterval = 3 };
        var history = Train(model, tasks, options);
        Assert.That(history.Select(h => h.Checkpoint is not null), Is.EqualTo(new[] { false, false, true, true }));
        using var fresh = tasks.BuildPareto();
        fresh.LoadPretrained(history[^1].Checkpoint!);
        using var merged = model.MergeAndUnload([0.3, 0.7]);
        using var reloaded = fresh.MergeAndUnload([0.3, 0.7]);
        var expected = merged.state_dict();
        foreach (var (key, value) in reloaded.state_dict())
        {
            Assert.That(value.equal(expected[key]).all().item<bool>(), Is.True, key);
        }
    }

    [Test]
    public void Train_CancelledToken_ThrowsBeforeFirstStep()
    {
        using var tasks = new SyntheticTasks(examples: 8);
        using var model = tasks.BuildPareto();
        var before = TrainingFixture.Snapshot(model);
        using var cancellation = new CancellationTokenSource();
        cancellation.Cancel();
        Assert.Throws<OperationCanceledException>(() => new AdaptationTrainer().Adapt(
            model, tasks.Tasks, new AdaptationOptions { Objective = new ParetoObjective(), Steps = 2 }, cancellationToken: cancellation.Token));
        Assert.That(TrainingFixture.BitEqual(before, TrainingFixture.Snapshot(model)), Is.True);
    }

    [Test]
    public void Train_SameSeed_SamePreferencesAndLosses()
    {
        using var tasks = new SyntheticTasks(examples: 16);
        using var first = tasks.BuildPareto();
        using var second = tasks.BuildPareto();
        var options = new AdaptationOptions { Objective = new ParetoObjective(), Steps = 3, BatchSize = 8 };
        var a = Train(first, tasks, options);
        var b = Train(second, tasks, options);
        Assert.That(b.Select(h => h.Preference), Is.EqualTo(a.Select(h => h.Preference)));
        Assert.That(b.Select(h => h.Loss), Is.EqualTo(a.Select(h => h.Loss)));
    }

    [Test]
    public void Train_UnlabelledTask_ThrowsNamingTask()
    {
        using var tasks = new SyntheticTasks(examples: 8);
        using var model = tasks.BuildPareto();
        using var images = randn(8, 3, 8, 8);
        using var unlabelled = new WeightEnsembling.Tasks.InMemoryTaskDataset("blind", images, null, SyntheticTasks.Classes);
        var taskList = new[] { tasks.Tasks[0], new ClassificationTask("blind", unlabelled, tasks.Tasks[1].Head) };
        var error = Assert.Throws<ArgumentException>(() => new AdaptationTrainer().Adapt(
            model, taskList, new AdaptationOptions { Objective = new ParetoObjective(), Steps = 1 }));
        Assert.That(error!.Message, Does.Contain("'blind'").And.Contain("labelled"));
    }

    private static List<AdaptationProgress> Train(ParetoUpscaledModel model, SyntheticTasks tasks, AdaptationOptions options)
    {
        var history = new List<AdaptationProgress>();
        new AdaptationTrainer().Adapt(model, tasks.Tasks, options, new Recorder(history));
        return history;
    }

    private static AdaptationOptions Options(ParetoScalarization scalarization) => new()
    {
        Objective = new ParetoObjective { Scalarization = scalarization },
        Steps = 120,
        BatchSize = 32,
        LearningRate = 0.05,
        Seed = 1,
        CosineSchedule = true,
        MinLearningRateRatio = 0.1,
    };

    private sealed class Recorder(List<AdaptationProgress> history, Action<AdaptationProgress>? onReport = null) : IProgress<AdaptationProgress>
    {
        public void Report(AdaptationProgress value)
        {
            history.Add(value);
            onReport?.Invoke(value);
        }
    }
}
