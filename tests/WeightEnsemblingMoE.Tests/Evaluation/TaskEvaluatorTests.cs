using WeightEnsembling.Evaluation;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Evaluation;

[TestFixture, NonParallelizable]
public sealed class TaskEvaluatorTests
{
    private const int Classes = 3;

    /// <summary>10 images, image i filled with i; labels chosen so that the predictor below is right on 7 of them.</summary>
    private static InMemoryTaskDataset Data()
    {
        using var scope = NewDisposeScope();
        var images = arange(10, dtype: ScalarType.Float32).reshape(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous();
        // The predictor says class i mod 3: [0,1,2,0,1,2,0,1,2,0]; labels differ at positions 2, 5 and 9.
        var labels = tensor(new long[] { 0, 1, 0, 0, 1, 0, 0, 1, 2, 1 });
        return new InMemoryTaskDataset("toy", images, labels, Classes);
    }

    /// <summary>Logits with 2 on class (i mod 3) and 0 elsewhere, from the pixel value i.</summary>
    private static Tensor Predict(Tensor images)
    {
        var index = images[.., 0, 0, 0].to_type(ScalarType.Int64).remainder(Classes);
        return nn.functional.one_hot(index, Classes).to_type(ScalarType.Float32) * 2;
    }

    [Test]
    public void Evaluate_DeterministicPredictor_GivesHandCountedAccuracyAndLoss()
    {
        using var data = Data();
        var score = TaskEvaluator.Evaluate(Predict, data, batchSize: 4);
        Assert.That(score.Task, Is.EqualTo("toy"));
        Assert.That(score.Accuracy, Is.EqualTo(0.7).Within(1e-12));
        // Logits (2, 0, 0): right class −log(e²/(e²+2)) = 0.2395447, wrong class −log(1/(e²+2)) = 2.2395447.
        // Mean = (7 · 0.2395447 + 3 · 2.2395447) / 10 = 0.8395447.
        Assert.That(score.Loss, Is.EqualTo(0.8395447).Within(1e-6));
    }

    [Test]
    public void Evaluate_ShuffledSubsetsAndBatchSizes_GiveSameAccuracy()
    {
        using var data = Data();
        var reference = TaskEvaluator.Evaluate(Predict, data, batchSize: 10);
        var shuffled = data.Subset(new long[] { 7, 2, 9, 0, 4, 1, 8, 3, 6, 5 });
        foreach (int batchSize in new[] { 1, 3, 7 })
        {
            var score = TaskEvaluator.Evaluate(Predict, shuffled, batchSize);
            Assert.That(score.Accuracy, Is.EqualTo(reference.Accuracy), $"batch size {batchSize}");
            Assert.That(score.Loss, Is.EqualTo(reference.Loss).Within(1e-9), $"batch size {batchSize}");
        }
    }

    [Test]
    public void Evaluate_RunsWithoutGradients()
    {
        using var data = Data();
        var weight = ones(Classes, 4).requires_grad_();
        bool? sawGrad = null;
        TaskEvaluator.Evaluate(images =>
        {
            var logits = images.reshape(images.shape[0], -1).matmul(weight.t());
            sawGrad = logits.requires_grad;
            return logits;
        }, data, batchSize: 5);
        Assert.That(sawGrad, Is.False);
        weight.Dispose();
    }

    [Test]
    public void Evaluate_UnlabelledDataset_ThrowsNamingDataset()
    {
        using var scope = NewDisposeScope();
        using var data = new InMemoryTaskDataset("unlabelled", zeros(2, 1, 1, 1), null, Classes);
        var ex = Assert.Throws<ArgumentException>(() => TaskEvaluator.Evaluate(Predict, data, 2));
        Assert.That(ex!.Message, Does.Contain("'unlabelled' has no labels"));
    }

    [Test]
    public void Evaluate_WrongLogitWidth_ThrowsNamingTaskAndShape()
    {
        using var data = Data();
        var ex = Assert.Throws<InvalidOperationException>(() => TaskEvaluator.Evaluate(images => zeros(images.shape[0], 5), data, 4));
        Assert.That(ex!.Message, Does.Contain("'toy'").And.Contain("[4, 3]").And.Contain("[4, 5]"));
    }

    [Test]
    public void Evaluate_SeveralTasks_ReportsEachInOrderWithElapsed()
    {
        using var data = Data();
        using var other = data.Subset(new long[] { 0, 1, 3 }, "toy-easy");
        var progress = new List<string>();
        var report = TaskEvaluator.Evaluate("oracle", [(data, Predict), (other, Predict)], 4, new SyncProgress(s => progress.Add(s.Task)));
        Assert.That(report.Method, Is.EqualTo("oracle"));
        Assert.That(report.Scores.Select(s => s.Accuracy), Is.EqualTo(new[] { 0.7, 1.0 }));
        Assert.That(report.Elapsed, Is.Not.Null);
        Assert.That(progress, Is.EqualTo(new[] { "toy", "toy-easy" }));
    }

    [Test]
    public void Evaluate_SameTaskTwice_ThrowsBeforeEvaluating()
    {
        using var data = Data();
        int calls = 0;
        Tensor Counting(Tensor images)
        {
            calls++;
            return Predict(images);
        }
        var ex = Assert.Throws<ArgumentException>(() => TaskEvaluator.Evaluate("m", [(data, Counting), (data, Counting)], 4));
        Assert.That(ex!.Message, Does.Contain("'toy' appears 2 times"));
        Assert.That(calls, Is.Zero);
    }

    private sealed class SyncProgress(Action<TaskScore> report) : IProgress<TaskScore>
    {
        public void Report(TaskScore value) => report(value);
    }
}
