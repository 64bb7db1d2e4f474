using WeightEnsembling.Evaluation;
using WeightEnsembling.Moe;
using WeightEnsembling.Training;
using WeightEnsembling.Merging;

namespace WeightEnsembling.Tests.Training;

[TestFixture, NonParallelizable]
public sealed class ModelEvaluatorTests
{
    private TrainingFixture fixture = null!;

    [SetUp]
    public void SetUp() => fixture = new TrainingFixture();

    [TearDown]
    public void TearDown() => fixture.Dispose();

    [Test]
    public void Evaluate_UpscaledModelOnShuffledBatchesOfDifferentSizes_GivesSameAccuracy()
    {
        using var upscaled = fixture.Upscale();
        new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, TrainingFixture.Options(3));
        var inOrder = ModelEvaluator.Evaluate("WEMoE", upscaled, fixture.Tasks, batchSize: 20);
        var permutation = new long[] { 7, 3, 19, 0, 12, 5, 16, 1, 9, 14, 2, 18, 11, 6, 4, 17, 8, 13, 10, 15 };
        var shuffled = fixture.Tasks.Select(t => t with { Data = t.Data.Subset(permutation) }).ToList();
        var inBatchesOfThree = ModelEvaluator.Evaluate("WEMoE", upscaled, shuffled, batchSize: 3);
        for (int i = 0; i < inOrder.Scores.Count; i++)
        {
            Assert.That(inBatchesOfThree.Scores[i].Accuracy, Is.EqualTo(inOrder.Scores[i].Accuracy));
            Assert.That(inBatchesOfThree.Scores[i].Loss, Is.EqualTo(inOrder.Scores[i].Loss).Within(1e-5));
        }

        foreach (var task in shuffled)
        {
            task.Data.Dispose();
        }
    }

    [Test]
    public void Evaluate_UpscaledModelInBatchReduceMode_RoutesPerSampleAndRestoresMode()
    {
        using var upscaled = fixture.Upscale();
        upscaled.RoutingMode = RoutingMode.BatchReduce;
        var single = ModelEvaluator.Evaluate("WEMoE", upscaled, fixture.Tasks, batchSize: 1);
        var whole = ModelEvaluator.Evaluate("WEMoE", upscaled, fixture.Tasks, batchSize: 20);
        Assert.That(whole.Scores.Select(s => s.Loss), Is.EqualTo(single.Scores.Select(s => s.Loss)).Within(1e-5));
        Assert.That(upscaled.RoutingMode, Is.EqualTo(RoutingMode.BatchReduce));
    }

    [Test]
    public void Evaluate_AdaMergingModel_ReportsEveryTaskAndRendersTable()
    {
        using var adaMerging = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts);
        var report = ModelEvaluator.Evaluate(null, adaMerging, fixture.Tasks);
        Assert.That(report.Method, Is.EqualTo("AdaMerging (layer-wise)"));
        Assert.That(report.Scores.Select(s => s.Task), Is.EqualTo(new[] { "t0", "t1" }));
        Assert.That(report.ToMarkdown(), Does.Contain("t0").And.Contain("t1"));
        Assert.That(EvaluationReport.FromJson(report.ToJson()), Is.EqualTo(report));
    }
}
