using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.TaskVectors;

/// <summary>
/// Issue 18 item 8 reported <c>LowRank(100000)</c> as accepted. That is by design (docs/reliability.md): the rank is a cap,
/// clamped per tensor to min(out, in) as its documentation says, so one option serves models of every width; a cap above a
/// tensor's size keeps its full SVD, i.e. the task vector itself.
/// </summary>
[TestFixture]
public sealed class LowRankRankClampTests
{
    [Test]
    public void LowRank_RankAboveEveryDimension_IsClampedAndKeepsTheTaskVector()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(18);
        var taskVectors = new[] { randn(new long[] { 6, 4 }, generator: generator), randn(new long[] { 6, 4 }, generator: generator) };
        using var storage = new LowRankTaskVectorStorage(taskVectors, rank: 100000, energyThreshold: null);
        for (var t = 0; t < taskVectors.Length; t++)
        {
            var difference = (storage.ToDense(t) - taskVectors[t]).abs().max().item<float>();
            Assert.That(difference, Is.LessThan(1e-5f), $"task {t}");
        }
    }
}
