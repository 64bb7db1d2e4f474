using System.Text.Json;
using static TorchSharp.torch;
using WeightEnsembling.Merging;

namespace WeightEnsembling.Tests.Merging;

[TestFixture, NonParallelizable]
public sealed class StateDictMergingTests
{
    private static IReadOnlyDictionary<string, Tensor> Model(float[] a, float[] b) =>
        new Dictionary<string, Tensor> { ["a"] = tensor(a), ["b"] = tensor(b) };

    [Test]
    public void SimpleAverage_OfTwoModels_IsElementwiseMean()
    {
        using var scope = NewDisposeScope();
        var merged = StateDictMerging.SimpleAverage([Model([1, 2], [0, 0]), Model([3, 6], [-2, 4])]);
        Assert.That(merged["a"].data<float>().ToArray(), Is.EqualTo(new float[] { 2, 4 }));
        Assert.That(merged["b"].data<float>().ToArray(), Is.EqualTo(new float[] { -1, 2 }));
    }

    [Test]
    public void TaskArithmetic_ByHand_AddsScaledSumOfTaskVectors()
    {
        using var scope = NewDisposeScope();
        // θ0 = [1, 2]; τ1 = [2, 2] − θ0 = [1, 0]; τ2 = [1, 5] − θ0 = [0, 3]; θ = θ0 + 0.3·[1, 3] = [1.3, 2.9].
        var pretrained = Model([1, 2], [0, 0]);
        var merged = StateDictMerging.TaskArithmetic(pretrained, [Model([2, 2], [0, 0]), Model([1, 5], [0, 0])], 0.3);
        Assert.That(merged["a"].data<float>().ToArray(), Is.EqualTo(new float[] { 1.3f, 2.9f }).Within(1e-6f));
        Assert.That(pretrained["a"].data<float>().ToArray(), Is.EqualTo(new float[] { 1, 2 }), "input unchanged");
    }

    [Test]
    public void Ties_ByHand_TrimsGloballyElectsSignsAndSumsAgreeingEntries()
    {
        using var scope = NewDisposeScope();
        // θ0: a = [1, 1], b = [0, 0]. τ1: a = [3, −1], b = [0.5, 2]. τ2: a = [−2, 1], b = [−4, 0.1]. d = 4, TopK = 0.5:
        // k = 4 − ⌊4·0.5⌋ = 2, threshold = 2nd smallest |τ| over the task's concatenated a and b.
        //   task 1: |τ| = 3, 1, .5, 2 → threshold 1 → trimmed a = [3, −1], b = [0, 2];
        //   task 2: |τ| = 2, 1, 4, .1 → threshold 1 → trimmed a = [−2, 1], b = [−4, 0].
        // Sum a = [1, 0], b = [−4, 2] → signs a = [+, 0], b = [−, +]; sum of signs = 1 → a[1] takes +.
        // Agreeing: a[0] → 3; a[1] → 1 (task 2); b[0] → −4; b[1] → 2. θ = θ0 + 0.5·merged: a = [2.5, 1.5], b = [−2, 1].
        var pretrained = Model([1, 1], [0, 0]);
        var finetuned = new[] { Model([4, 0], [0.5f, 2]), Model([-1, 2], [-4, 0.1f]) };
        var merged = StateDictMerging.Ties(pretrained, finetuned, new TiesMergingOptions { TopK = 0.5, ScalingFactor = 0.5 });
        Assert.That(merged["a"].data<float>().ToArray(), Is.EqualTo(new float[] { 2.5f, 1.5f }).Within(1e-6f));
        Assert.That(merged["b"].data<float>().ToArray(), Is.EqualTo(new float[] { -2f, 1f }).Within(1e-6f));
    }

    [Test]
    public void Ties_WithMean_DividesByAgreeingCount()
    {
        using var scope = NewDisposeScope();
        // TopK = 1 keeps everything. τ1 = [2], τ2 = [4], τ3 = [−1]: sign +, agreeing 2 and 4 → sum 6, mean 3; θ = 0 + 1·3.
        var zero = new Dictionary<string, Tensor> { ["w"] = tensor(new float[] { 0 }) };
        IReadOnlyDictionary<string, Tensor> Ft(float v) => new Dictionary<string, Tensor> { ["w"] = tensor(new[] { v }) };
        var options = new TiesMergingOptions { TopK = 1, ScalingFactor = 1, DisjointMerge = TiesDisjointMerge.Mean };
        var merged = StateDictMerging.Ties(zero, [Ft(2), Ft(4), Ft(-1)], options);
        Assert.That(merged["w"].item<float>(), Is.EqualTo(3f).Within(1e-6f));
    }

    [Test]
    public void Ties_MatchesPyTorchReferenceFixture()
    {
        var path = Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Merging", "ties_reference.json");
        using var document = JsonDocument.Parse(File.ReadAllText(path));
        var root = document.RootElement;
        using var scope = NewDisposeScope();
        var shapes = root.GetProperty("shapes").EnumerateObject()
            .ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(x => x.GetInt64()).ToArray());
        IReadOnlyDictionary<string, Tensor> Load(JsonElement model) => shapes.ToDictionary(
            s => s.Key, s => tensor(model.GetProperty(s.Key).EnumerateArray().Select(x => (float)x.GetDouble()).ToArray()).reshape(s.Value));
        var pretrained = Load(root.GetProperty("pretrained"));
        var finetuned = root.GetProperty("finetuned").EnumerateArray().Select(Load).ToList();
        foreach (var item in root.GetProperty("cases").EnumerateArray())
        {
            var options = new TiesMergingOptions
            {
                TopK = item.GetProperty("top_k").GetDouble(),
                ScalingFactor = item.GetProperty("scaling").GetDouble(),
                DisjointMerge = item.GetProperty("merge").GetString() == "mean" ? TiesDisjointMerge.Mean : TiesDisjointMerge.Sum,
            };
            var merged = StateDictMerging.Ties(pretrained, finetuned, options);
            var expected = Load(item.GetProperty("expected"));
            foreach (var name in shapes.Keys)
            {
                float difference = (merged[name] - expected[name]).abs().max().item<float>();
                Assert.That(difference, Is.LessThan(1e-5f), $"{name}, TopK = {options.TopK}, {options.DisjointMerge}");
            }
        }
    }

    [Test]
    public void TaskArithmetic_WithShapeMismatch_ThrowsNamingTensor()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() =>
            StateDictMerging.TaskArithmetic(Model([1, 2], [0, 0]), [Model([1, 2, 3], [0, 0])]));
        Assert.That(ex!.Message, Does.Contain("'a'").And.Contain("shape"));
    }

    [Test]
    public void Ties_WithMissingKey_ThrowsNamingTensor()
    {
        using var scope = NewDisposeScope();
        var partial = new Dictionary<string, Tensor> { ["a"] = tensor(new float[] { 1, 2 }) };
        var ex = Assert.Throws<ArgumentException>(() =>
            StateDictMerging.Ties(Model([1, 2], [0, 0]), [partial], new TiesMergingOptions()));
        Assert.That(ex!.Message, Does.Contain("missing [b]"));
    }

    [Test]
    public void SimpleAverage_WithNaN_ThrowsNamingModelAndTensor()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() =>
            StateDictMerging.SimpleAverage([Model([1, 2], [0, 0]), Model([1, 2], [float.NaN, 0])]));
        Assert.That(ex!.Message, Does.Contain("'b'").And.Contain("model 1").And.Contain("NaN"));
    }

    [Test]
    public void Ties_WithBadTopK_ThrowsNamingOption()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() =>
            StateDictMerging.Ties(Model([1, 2], [0, 0]), [Model([1, 2], [0, 0])], new TiesMergingOptions { TopK = 0 }));
        Assert.That(ex!.ParamName, Is.EqualTo("TopK"));
    }
}
