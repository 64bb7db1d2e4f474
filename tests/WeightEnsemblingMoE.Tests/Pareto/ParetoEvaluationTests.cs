using WeightEnsembling.Pareto;
using WeightEnsembling.Tests.SafeTensors;

namespace WeightEnsembling.Tests.Pareto;

[TestFixture, NonParallelizable]
public sealed class ParetoEvaluationTests
{
    [Test]
    public void Generate_ThreeByTwo_MatchesFusionBenchDocumentedExample()
    {
        Assert.That(SimplexGrid.Generate(3, 2), Is.EqualTo(new[] { new[] { 0.0, 0, 1 }, new[] { 0.0, 1, 0 }, new[] { 1.0, 0, 0 } }));
    }

    [Test]
    public void Generate_TwoByThree_MatchesFusionBenchDocumentedExample()
    {
        Assert.That(SimplexGrid.Generate(2, 3), Is.EqualTo(new[] { new[] { 0.0, 1 }, new[] { 0.5, 0.5 }, new[] { 1.0, 0 } }));
    }

    [Test]
    public void Generate_ThreeByFour_AllMultiplesOfAThirdOnTheSimplexOnce()
    {
        var grid = SimplexGrid.Generate(3, 4);
        Assert.That(grid, Has.Count.EqualTo(10)); // C(3 + 4 − 2, 2)
        Assert.That(grid.Select(p => p.Sum()), Has.All.EqualTo(1.0).Within(1e-12));
        Assert.That(grid.SelectMany(p => p).Select(v => v * 3), Has.All.EqualTo(0.0).Within(1e-12).Or.EqualTo(1.0).Within(1e-12).Or.EqualTo(2.0).Within(1e-12).Or.EqualTo(3.0).Within(1e-12));
        Assert.That(grid.Select(p => string.Join(",", p.Select(v => Math.Round(v * 3)))).Distinct().Count(), Is.EqualTo(10));
        Assert.That(grid[1], Is.EqualTo(new[] { 0.0, 1.0 / 3, 2.0 / 3 }).Within(1e-12));
    }

    [Test]
    public void Hypervolume_TwoDimensionalStaircase_EqualsHandComputedArea()
    {
        // Rectangles [0,1]×[0,3] ∪ [0,2]×[0,2] ∪ [0,3]×[0,1]: 3 + 2 + 1 = 6.
        Assert.That(ParetoFront.Hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]), Is.EqualTo(6).Within(1e-12));
    }

    [Test]
    public void Hypervolume_DominatedPointAndShiftedReference_HandComputed()
    {
        // (0.5, 0.5) adds nothing; with reference (0.5, 0.5) the staircase (1,3), (2,2), (3,1) covers 0.5·2.5 + 1·1.5 + 1·0.5.
        Assert.That(ParetoFront.Hypervolume([[1, 3], [2, 2], [3, 1], [0.5, 0.5]], [0.5, 0.5]), Is.EqualTo(3.25).Within(1e-12));
    }

    [Test]
    public void Hypervolume_ThreeDimensionalOverlappingBoxes_InclusionExclusion()
    {
        // Boxes 2·1·1 and 1·2·1 overlap in 1·1·1: 2 + 2 − 1 = 3; a third box 1·1·3 adds 3 − 1 = 2.
        Assert.That(ParetoFront.Hypervolume([[2, 1, 1], [1, 2, 1]], [0, 0, 0]), Is.EqualTo(3).Within(1e-12));
        Assert.That(ParetoFront.Hypervolume([[2, 1, 1], [1, 2, 1], [1, 1, 3]], [0, 0, 0]), Is.EqualTo(5).Within(1e-12));
    }

    [Test]
    public void Hypervolume_PointOfWrongLength_ThrowsNamingPoint()
    {
        var error = Assert.Throws<ArgumentException>(() => ParetoFront.Hypervolume([[1, 2], [1]], [0, 0]));
        Assert.That(error!.Message, Does.Contain("Point 1"));
    }

    [Test]
    public void NonDominated_MixedPoints_KeepsTheFrontAndDuplicates()
    {
        var front = ParetoFront.NonDominated([[1, 3], [2, 2], [1.5, 1.5], [3, 1], [2, 2]]);
        Assert.That(front, Is.EqualTo(new[] { 0, 1, 3, 4 }));
    }

    [Test]
    public void ToJson_RoundTrip_KeepsPointsAndHypervolume()
    {
        var report = SampleReport();
        var copy = ParetoEvaluationReport.FromJson(report.ToJson());
        Assert.That(copy.Method, Is.EqualTo("PWEMoE"));
        Assert.That(copy.Points.Select(p => p.Accuracies), Is.EqualTo(report.Points.Select(p => p.Accuracies)));
        Assert.That(copy.Hypervolume, Is.EqualTo(report.Hypervolume));
        Assert.That(report.Hypervolume, Is.EqualTo((0.5 * 0.9) + ((0.9 - 0.5) * 0.4)).Within(1e-12)); // [0,0.5]×[0,0.9] ∪ [0,0.9]×[0,0.4]
        Assert.That(report.NonDominated, Is.EqualTo(new[] { 0, 1 }));
    }

    [Test]
    public void SaveCsv_Report_WritesHeaderAndOneRowPerPointAtomically()
    {
        using var folder = new TempFolder();
        var path = folder.File("front.csv");
        SampleReport().SaveCsv(path);
        var lines = File.ReadAllLines(path);
        Assert.That(lines[0], Is.EqualTo("method,p_mnist,p_svhn,acc_mnist,acc_svhn,loss_mnist,loss_svhn,non_dominated"));
        Assert.That(lines[1], Is.EqualTo("PWEMoE,0.25,0.75,0.5,0.9,1.5,0.2,true"));
        Assert.That(lines, Has.Length.EqualTo(4));
        Assert.That(lines[3], Does.EndWith(",false"));
        Assert.That(Directory.GetFiles(folder.Path), Has.Length.EqualTo(1));
    }

    [Test]
    public void EvaluateExperts_Corners_MatchTaskArithmeticAtScaleOne()
    {
        using var tasks = new SyntheticTasks(examples: 24);
        var experts = ParetoSetEvaluator.EvaluateExperts(tasks.Experts, tasks.Tasks, batchSize: 8);
        var arithmetic = ParetoSetEvaluator.EvaluateTaskArithmetic(tasks.Pretrained, tasks.Experts, tasks.Tasks, [[1.0, 0.0], [0.0, 1.0]], batchSize: 8);
        Assert.That(experts.Points[0].Preference, Is.EqualTo(new[] { 1.0, 0.0 }));
        // Each expert is perfect on its own task by construction of the labels.
        Assert.That(experts.Points[0].Accuracies[0], Is.EqualTo(1.0));
        Assert.That(experts.Points[1].Accuracies[1], Is.EqualTo(1.0));
        for (int i = 0; i < 2; i++)
        {
            Assert.That(arithmetic.Points[i].Losses, Is.EqualTo(experts.Points[i].Losses).Within(1e-4));
        }
    }

    [Test]
    public void EvaluateTaskArithmetic_InteriorPoint_LiesBetweenTheExperts()
    {
        using var tasks = new SyntheticTasks(examples: 24);
        var report = ParetoSetEvaluator.EvaluateTaskArithmetic(tasks.Pretrained, tasks.Experts, tasks.Tasks, SimplexGrid.Generate(2, 3), batchSize: 8);
        Assert.That(report.Method, Is.EqualTo("Task Arithmetic"));
        Assert.That(report.Points, Has.Count.EqualTo(3));
        // Grid order (0,1), (½,½), (1,0): task 0's loss falls as its factor grows.
        Assert.That(report.Points[0].Losses[0], Is.GreaterThan(report.Points[2].Losses[0]));
        Assert.That(report.Points[0].Losses[1], Is.LessThan(report.Points[2].Losses[1]));
    }

    private static ParetoEvaluationReport SampleReport() => new(
        "PWEMoE",
        ["mnist", "svhn"],
        [
            new ParetoPoint([0.25, 0.75], [0.5, 0.9], [1.5, 0.2]),
            new ParetoPoint([0.75, 0.25], [0.9, 0.4], [0.3, 1.1]),
            new ParetoPoint([0.5, 0.5], [0.4, 0.3], [1.9, 1.8]),
        ]);
}
