using Microsoft.Extensions.Logging;
using WeightEnsembling.Merging;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Training;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Logging;

[TestFixture, NonParallelizable]
public sealed class LoggingTests
{
    [Test]
    public void Build_WithLogger_LogsStartEveryPhaseEveryModuleAndEnd()
    {
        using var fixture = new TrainingFixture();
        var logger = new CollectingLogger();
        using var upscaled = fixture.Upscale(u => u.WithLogger(logger));
        var ids = logger.EventIds.ToList();
        Assert.That(ids.First(), Is.EqualTo(100));
        Assert.That(ids.Last(), Is.EqualTo(103));
        Assert.That(ids.Count(id => id == 101), Is.EqualTo(2));
        Assert.That(ids.Count(id => id == 102), Is.EqualTo(upscaled.Modules.Count));
        Assert.That(logger.Entries.Where(e => e.Id.Id == 102).Select(e => e.Message), Has.Some.Contains("vision_model.encoder.layers.0.mlp"));
    }

    [Test]
    public void Build_WithoutLogger_WritesNothingToTheConsole()
    {
        using var fixture = new TrainingFixture();
        var original = Console.Out;
        using var captured = new StringWriter();
        Console.SetOut(captured);
        try
        {
            using var upscaled = fixture.Upscale();
            new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, TrainingFixture.Options(2));
        }
        finally
        {
            Console.SetOut(original);
        }

        Assert.That(captured.ToString(), Is.Empty);
    }

    [Test]
    public void Adapt_WithLoggerAndCheckpoints_LogsStartStepsCheckpointsAndEnd()
    {
        using var fixture = new TrainingFixture();
        using var upscaled = fixture.Upscale();
        string folder = Directory.CreateTempSubdirectory("wemoe-log").FullName;
        try
        {
            var options = TrainingFixture.Options(4);
            options.CheckpointFolder = Path.Combine(folder, "checkpoint");
            options.CheckpointInterval = 2;
            var logger = new CollectingLogger();
            new AdaptationTrainer(new TypedLogger<AdaptationTrainer>(logger)).Adapt(upscaled, fixture.Tasks, options);
            var ids = logger.EventIds.ToList();
            Assert.That(ids.First(), Is.EqualTo(200));
            Assert.That(ids.Last(), Is.EqualTo(204));
            Assert.That(ids.Count(id => id == 202), Is.EqualTo(4));
            Assert.That(ids.Count(id => id == 203), Is.EqualTo(2));
            Assert.That(logger.Entries.Last().Message, Does.Contain("completed at step 4"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void Adapt_Cancelled_LogsCancellation()
    {
        using var fixture = new TrainingFixture();
        using var upscaled = fixture.Upscale();
        var logger = new CollectingLogger();
        using var cancellation = new CancellationTokenSource();
        cancellation.Cancel();
        Assert.Throws<OperationCanceledException>(() => new AdaptationTrainer(new TypedLogger<AdaptationTrainer>(logger)).Adapt(
            upscaled, fixture.Tasks, TrainingFixture.Options(3), cancellationToken: cancellation.Token));
        Assert.That(logger.Entries.Last().Message, Does.Contain("cancelled at step 0"));
    }

    [Test]
    public void RegMeanMerge_SingularGramMatrix_LogsRidgeFallbackWarningNamingTheLayer()
    {
        using var scope = NewDisposeScope();
        var logger = new CollectingLogger();
        RegMean.Merge([Linear(1, 5), Linear(3, 7)], [Gram(3, 0), Gram(1, 0)], logger: logger);
        var warning = logger.Entries.Single(e => e.Level == LogLevel.Warning);
        Assert.That(warning.Id.Id, Is.EqualTo(302));
        Assert.That(warning.Message, Does.Contain("'lin'"));
    }

    [Test]
    public void RegMeanMerge_ZeroGramMatrix_LogsAverageFallbackWarning()
    {
        using var scope = NewDisposeScope();
        var logger = new CollectingLogger();
        RegMean.Merge([Linear(1, 5), Linear(3, 7)], [Gram(0, 0), Gram(0, 0)], logger: logger);
        Assert.That(logger.Entries.Single(e => e.Level == LogLevel.Warning).Id.Id, Is.EqualTo(303));
    }

    [Test]
    public void RegMeanMerge_WellConditioned_LogsNoWarning()
    {
        using var scope = NewDisposeScope();
        var logger = new CollectingLogger();
        RegMean.Merge([Linear(1, 5), Linear(3, 7)], [Gram(3, 2), Gram(1, 1)], logger: logger);
        Assert.That(logger.Entries.Where(e => e.Level >= LogLevel.Warning), Is.Empty);
    }

    [Test]
    public void FisherRun_WithLogger_LogsEachTaskAndTheMerge()
    {
        using var scope = NewDisposeScope();
        using var model = TinyClip.Pretrained(7);
        using var head = new LinearClassificationHead(8, 2);
        using var data = new InMemoryTaskDataset("fisher-task", TinyClip.Images(3, 4), null, 2);
        var logger = new CollectingLogger();
        using var merged = FisherMerging.Run([model, model], [head, head], [data, data], new FisherMergingOptions { BatchSize = 2 }, logger: logger);
        Assert.That(logger.EventIds, Is.EqualTo(new[] { 300, 300, 301 }));
        Assert.That(logger.Entries[0].Message, Does.Contain("'fisher-task'"));
    }

    // A linear layer "lin" with weight [[w0, w1]] and zero bias; a diagonal Gram matrix diag(g0, g1).
    private static Dictionary<string, Tensor> Linear(float w0, float w1) =>
        new() { ["lin.weight"] = tensor(new float[,] { { w0, w1 } }), ["lin.bias"] = zeros(1) };

    private static Dictionary<string, Tensor> Gram(float g0, float g1) =>
        new() { ["lin"] = tensor(new float[,] { { g0, 0 }, { 0, g1 } }) };

    private sealed class TypedLogger<T>(ILogger inner) : ILogger<T>
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            inner.Log(logLevel, eventId, state, exception, formatter);
    }
}
