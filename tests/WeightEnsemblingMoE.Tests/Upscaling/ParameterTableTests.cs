using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.TaskVectors;

namespace WeightEnsembling.Tests.Upscaling;

[TestFixture, NonParallelizable]
public sealed class ParameterTableTests
{
    [Test]
    public void Compute_DenseStorage_TotalsGrowByOneSetOfMlpTaskVectorsPerExpert()
    {
        using var pretrained = TinyClip.Pretrained();
        var experts = new[] { TinyClip.Expert(pretrained, 1), TinyClip.Expert(pretrained, 2), TinyClip.Expert(pretrained, 3) };
        var table = ParameterTable.Compute(pretrained, experts, [("dense", TaskVectorStorageOptions.Dense())]);

        long single = pretrained.parameters().Sum(p => p.numel());
        // Per layer: fc1 (32×16 + 32) and fc2 (16×32 + 16) = 1072 task-vector elements per expert; 2 layers.
        const long mlpPerExpert = 2 * ((32 * 16) + 32 + (16 * 32) + 16);
        Assert.That(table.SingleModelParameters, Is.EqualTo(single));
        Assert.That(table.Rows, Has.Count.EqualTo(3));
        for (int t = 1; t <= 3; t++)
        {
            var row = table.Rows[t - 1];
            // 2-layer routers per layer: 16×16 + 16 + t×16 + t.
            long routers = 2 * ((16 * 16) + 16 + (t * 16) + t);
            Assert.That(row.Trainable, Is.EqualTo(routers), $"T = {t}");
            Assert.That(row.Total, Is.EqualTo(single + (t * mlpPerExpert) + routers), $"T = {t}");
            Assert.That(row.SavedByMerging, Is.EqualTo((t * single) - row.Total), $"T = {t}");
        }

        Assert.That(table.ToMarkdown(), Does.Contain("| dense | 3 |"));
        foreach (var expert in experts)
        {
            expert.Dispose();
        }
    }

    [Test]
    public void Compute_SparseStorage_StoresLessThanDense()
    {
        using var pretrained = TinyClip.Pretrained();
        var experts = new[] { TinyClip.Expert(pretrained, 1), TinyClip.Expert(pretrained, 2) };
        var table = ParameterTable.Compute(pretrained, experts, [("dense", TaskVectorStorageOptions.Dense()), ("sparse p=0.9", TaskVectorStorageOptions.Sparse(0.9))]);
        var dense = table.Rows.Single(r => r.Storage == "dense" && r.Experts == 2);
        var sparse = table.Rows.Single(r => r.Storage == "sparse p=0.9" && r.Experts == 2);
        Assert.That(sparse.Bytes, Is.LessThan(dense.Bytes));
        Assert.That(sparse.SavedByMerging, Is.GreaterThan(dense.SavedByMerging));
        foreach (var expert in experts)
        {
            expert.Dispose();
        }
    }
}
