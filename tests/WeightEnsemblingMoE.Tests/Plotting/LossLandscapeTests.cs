using WeightEnsembling.Analysis;
using WeightEnsembling.Clip;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Upscaling;

namespace WeightEnsembling.Tests.Plotting;

[TestFixture, NonParallelizable]
public sealed class LossLandscapeTests
{
    private ClipVisionModel pretrained = null!;
    private ClipVisionModel expert1 = null!;
    private ClipVisionModel expert2 = null!;
    private TaskHead head1 = null!;
    private TaskHead head2 = null!;
    private TaskDataset data1 = null!;
    private TaskDataset data2 = null!;
    private LossLandscape landscape = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        pretrained = TinyClip.Pretrained(seed: 3);
        expert1 = TinyClip.Expert(pretrained, seed: 11, scale: 0.2);
        expert2 = TinyClip.Expert(pretrained, seed: 12, scale: 0.2);
        head1 = PlotData.Head(21);
        head2 = PlotData.Head(22);
        data1 = PlotData.Data("alpha", 12, seed: 31, expert1, head1);
        data2 = PlotData.Data("beta", 12, seed: 32, expert2, head2);
        landscape = LossLandscapes.Compute(pretrained, expert1, expert2, [ClassificationTask.Of(data1, head1), ClassificationTask.Of(data2, head2)], new LossLandscapeOptions { Resolution = 3, BatchSize = 5 });
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        foreach (var disposable in new IDisposable[] { pretrained, expert1, expert2, head1, head2, data1, data2 })
        {
            disposable.Dispose();
        }
    }

    private static double Loss(ClipVisionModel model, TaskHead head, TaskDataset data) =>
        TaskEvaluator.Evaluate(images => head.forward(model.GetImageFeatures(images)), data, 4).Loss!.Value;

    [Test]
    public void Compute_AtOrigin_EqualsPretrainedLoss()
    {
        var origin = landscape.PointAt(1, 1);
        Assert.That((origin.Lambda1, origin.Lambda2), Is.EqualTo((0.0, 0.0)));
        Assert.That(origin.Scores[0].Loss, Is.EqualTo(Loss(pretrained, head1, data1)).Within(1e-5));
        Assert.That(origin.Scores[1].Loss, Is.EqualTo(Loss(pretrained, head2, data2)).Within(1e-5));
    }

    [Test]
    public void Compute_AtOneZero_EqualsFirstFinetunedLoss()
    {
        var point = landscape.PointAt(2, 1);
        Assert.That((point.Lambda1, point.Lambda2), Is.EqualTo((1.0, 0.0)));
        Assert.That(point.Scores[0].Loss, Is.EqualTo(Loss(expert1, head1, data1)).Within(1e-5));
        Assert.That(point.Scores[1].Loss, Is.EqualTo(Loss(expert1, head2, data2)).Within(1e-5));
    }

    [Test]
    public void Compute_AtZeroOne_EqualsSecondFinetunedLoss()
    {
        var point = landscape.PointAt(1, 2);
        Assert.That(point.Scores[1].Loss, Is.EqualTo(Loss(expert2, head2, data2)).Within(1e-5));
    }

    [Test]
    public void Compute_OffAxisPoint_EqualsExplicitlyMergedModel()
    {
        // θ_0 − τ_1 + τ_2 built by hand from the state dicts.
        var theta0 = pretrained.state_dict();
        var t1 = expert1.state_dict();
        var t2 = expert2.state_dict();
        var weights = theta0.ToDictionary(e => e.Key, e => e.Value - (t1[e.Key] - e.Value) + (t2[e.Key] - e.Value));
        using var merged = ModelMerging.WithWeights(pretrained, weights);
        var point = landscape.PointAt(0, 2);
        Assert.That((point.Lambda1, point.Lambda2), Is.EqualTo((-1.0, 1.0)));
        Assert.That(point.Scores[0].Loss, Is.EqualTo(Loss(merged, head1, data1)).Within(1e-4));
        Assert.That(point.JointLoss, Is.EqualTo(Loss(merged, head1, data1) + Loss(merged, head2, data2)).Within(1e-4));
        foreach (var tensor in weights.Values)
        {
            tensor.Dispose();
        }
    }

    [Test]
    public void Compute_MarksPretrainedAndFinetunedModels()
    {
        Assert.That(landscape.Markers.Select(m => (m.Lambda1, m.Lambda2)), Is.EqualTo(new[] { (0.0, 0.0), (1.0, 0.0), (0.0, 1.0) }));
        Assert.That(landscape.Markers[1].Label, Does.Contain("alpha"));
    }

    [Test]
    public void Compute_DoesNotModifyInputs()
    {
        using var fresh = TinyClip.Pretrained(seed: 3);
        foreach (var (name, tensor) in fresh.state_dict())
        {
            Assert.That(TinyClip.MaxDifference(tensor, pretrained.state_dict()[name]), Is.Zero, name);
        }
    }

    [Test]
    public void LossGrid_IsLambda1Major()
    {
        var grid = landscape.LossGrid(0);
        Assert.That(grid[2, 1], Is.EqualTo(landscape.PointAt(2, 1).Scores[0].Loss));
        Assert.That(grid[0, 2], Is.EqualTo(landscape.PointAt(0, 2).Scores[0].Loss));
    }

    [Test]
    public void Project_TaskArithmetic_RecoversScalingFactorOnPlane()
    {
        using var merged = ModelMerging.TaskArithmetic(pretrained, [expert1, expert2], 0.3);
        var marker = LossLandscapes.Project(pretrained, expert1, expert2, merged, "task arithmetic");
        Assert.That(marker.Lambda1, Is.EqualTo(0.3).Within(1e-4));
        Assert.That(marker.Lambda2, Is.EqualTo(0.3).Within(1e-4));
        Assert.That(marker.Residual, Is.LessThan(1e-3));
    }

    [Test]
    public void Project_Ties_LiesOffPlaneWithPositiveResidual()
    {
        using var merged = ModelMerging.Ties(pretrained, [expert1, expert2]);
        var marker = LossLandscapes.Project(pretrained, expert1, expert2, merged, "TIES");
        Assert.That(marker.Residual, Is.GreaterThan(0.05).And.LessThan(1));
    }

    [Test]
    public void Project_ParallelTaskVectors_ThrowsNamingPlane()
    {
        var ex = Assert.Throws<ArgumentException>(() => LossLandscapes.Project(pretrained, expert1, expert1, expert2, "x"));
        Assert.That(ex!.Message, Does.Contain("parallel"));
    }

    [Test]
    public void Compute_MismatchedModel_ThrowsNamingTensor()
    {
        using var other = TinyClip.Pretrained(seed: 3, TinyClip.Config with { IntermediateSize = 24 });
        var ex = Assert.Throws<ArgumentException>(() => LossLandscapes.Compute(pretrained, other, expert2, [ClassificationTask.Of(data1, head1)], new LossLandscapeOptions { Resolution = 2 }));
        Assert.That(ex!.Message, Does.Contain("fc1.weight").And.Contain("finetuned1"));
    }

    [Test]
    public void Options_ResolutionOne_ThrowsNamingOption()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new LossLandscapeOptions { Resolution = 1 }.Validate());
        Assert.That(ex!.ParamName, Is.EqualTo("Resolution"));
    }

    [Test]
    public void AxisValues_OddSymmetricGrid_HoldsExactZeroAndOne()
    {
        var values = new LossLandscapeOptions { Resolution = 11 }.AxisValues();
        Assert.That(values[5], Is.EqualTo(0.0));
        Assert.That(values[10], Is.EqualTo(1.0));
        Assert.That(values[0], Is.EqualTo(-1.0));
    }
}
