using TorchSharp;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// Benchmark 4 (memory): the bytes the dense, sparse (p = 0.9) and low-rank (k = 64) storages hold for the task vectors
/// of one ViT-B/32 MLP (fc1 and fc2, weights and biases, T = 8), in float32 and with float16 stored values. Sizes are exact (<see cref="TaskVectorStorage.Bytes"/>),
/// so this is a harness, not a timed benchmark.
/// </summary>
internal static class StorageBytesHarness
{
    public static int Run()
    {
        torch.manual_seed(0);
        var pretrained = new Dictionary<string, Tensor>
        {
            ["fc1.weight"] = randn(3072, 768), ["fc1.bias"] = randn(3072),
            ["fc2.weight"] = randn(768, 3072), ["fc2.bias"] = randn(768),
        };
        var experts = Enumerable.Range(0, 8)
            .Select(_ => (IReadOnlyDictionary<string, Tensor>)pretrained.ToDictionary(p => p.Key, p => p.Value + (randn(p.Value.shape) * 1e-3)))
            .ToList();
        long denseBytes = 0;
        foreach (var (label, options) in new[]
        {
            ("dense", TaskVectorStorageOptions.Dense()),
            ("sparse p=0.9", TaskVectorStorageOptions.Sparse(0.9)),
            ("low-rank k=64", TaskVectorStorageOptions.LowRank(64)),
            ("dense f16", Half(TaskVectorStorageOptions.Dense())),
            ("sparse p=0.9 f16", Half(TaskVectorStorageOptions.Sparse(0.9))),
            ("low-rank k=64 f16", Half(TaskVectorStorageOptions.LowRank(64))),
        })
        {
            using var vectors = TaskVectorDictionary.Create(pretrained, experts, options);
            long weightBytes = vectors["fc1.weight"].Bytes + vectors["fc2.weight"].Bytes;
            denseBytes = denseBytes == 0 ? vectors.Bytes : denseBytes;
            Console.WriteLine($"{label,-18} all: {vectors.Bytes / 1048576.0,8:F2} MiB ({100.0 * vectors.Bytes / denseBytes,5:F1}% of dense)   weights only: {weightBytes / 1048576.0,8:F2} MiB");
        }

        return 0;
    }

    /// <summary>The options with 16-bit stored values (bfloat16 has the same size).</summary>
    private static TaskVectorStorageOptions Half(TaskVectorStorageOptions options)
    {
        options.DType = ScalarType.Float16;
        return options;
    }
}
