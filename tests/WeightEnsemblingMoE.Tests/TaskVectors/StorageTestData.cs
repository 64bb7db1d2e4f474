using static TorchSharp.torch;

namespace WeightEnsembling.Tests.TaskVectors;

/// <summary>Small random task vectors and the naive reference computations the storage tests compare against.</summary>
internal static class StorageTestData
{
    public static List<Tensor> RandomTaskVectors(int taskCount, long[] shape, long seed)
    {
        var generator = new Generator((ulong)seed);
        return Enumerable.Range(0, taskCount).Select(_ => randn(shape, generator: generator)).ToList();
    }

    /// <summary>x_b · (Σ_t R_bt τ_t)ᵀ, one sample at a time, from the given dense task vectors.</summary>
    public static Tensor NaiveLinearDelta(Tensor input, Tensor routing, IReadOnlyList<Tensor> dense)
    {
        var outputs = new List<Tensor>();
        for (long b = 0; b < input.shape[0]; b++)
        {
            var delta = zeros_like(dense[0]);
            for (int t = 0; t < dense.Count; t++)
            {
                delta += routing[b, t].item<float>() * dense[t];
            }

            outputs.Add(input[b].matmul(delta.t()));
        }

        return stack(outputs);
    }

    public static float MaxAbsDifference(Tensor a, Tensor b) => (a - b).abs().max().item<float>();
}
