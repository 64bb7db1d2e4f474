using WeightEnsembling.Evaluation;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Training;

[TestFixture, NonParallelizable]
public sealed class TaskInputChecksTests
{
    [Test]
    public void Adapt_HeadOfWrongWidth_MessageNamesTheTask()
    {
        using var fixture = new TrainingFixture();
        using var upscaled = fixture.Upscale();
        using var images = TinyClip.Images(8, 1);
        using var labels = zeros(8, ScalarType.Int64);
        using var wide = new LinearClassificationHead(randn(3, 5), zeros(3));
        var tasks = new[] { fixture.Tasks[0], new ClassificationTask("too-wide", new InMemoryTaskDataset("d", images, labels, 3), wide) };
        var e = Assert.Throws<ArgumentException>(() => new AdaptationTrainer().Adapt(upscaled, tasks, TrainingFixture.Options(1)));
        Assert.That(e!.Message, Does.StartWith("Task 'too-wide':").And.Contain("[B, 5]"));
    }

    [Test]
    public void Evaluate_Uint8Images_RefusedNamingTaskAndDataset()
    {
        using var fixture = new TrainingFixture();
        using var data = new RawPixelDataset();
        var task = new ClassificationTask("bytes", data, fixture.Tasks[0].Head);
        var e = Assert.Throws<ArgumentException>(() => ModelEvaluator.Evaluate("plain", fixture.Pretrained, [task]));
        Assert.That(e!.Message, Does.Contain("Task 'bytes'").And.Contain("raw-pixels").And.Contain("Byte"));
    }

    [Test]
    public void Adapt_CheckpointFolderThatIsAFile_RefusedBeforeAnyStep()
    {
        using var fixture = new TrainingFixture();
        using var upscaled = fixture.Upscale();
        var before = upscaled.RouterStateDict();
        var options = TrainingFixture.Options(3);
        using var folder = new TempFolder();
        string file = folder.File("not-a-folder");
        File.WriteAllText(file, "x");
        options.CheckpointFolder = file;
        options.CheckpointInterval = 1;
        var e = Assert.Throws<ArgumentException>(() => new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, options));
        Assert.That(e!.Message, Does.Contain(file).And.Contain("is a file"));
        Assert.That(upscaled.RouterStateDict().All(p => TinyClip.BitEqual(p.Value, before[p.Key])), "routers changed although training was refused");
    }
}

/// <summary>A dataset that hands out raw uint8 pixels, as a hand-written loader that forgot to normalise would.</summary>
internal sealed class RawPixelDataset() : TaskDataset("raw-pixels", 3)
{
    public override long Count => 4;

    public override bool HasLabels => true;

    protected override TaskBatch LoadExamples(long[] indices) =>
        new(randint(0, 255, [indices.Length, 3, 8, 8], dtype: ScalarType.Byte), zeros(indices.Length, ScalarType.Int64));
}
