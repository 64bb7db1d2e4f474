using BenchmarkDotNet.Attributes;
using WeightEnsembling.Clip;

namespace WeightEnsembling.Benchmarks;

/// <summary>
/// Benchmark 3: one test-time adaptation step of the upscaled ViT-B/32 (batch-reduce routing): forward on each task's
/// batch of 16 images, task head, entropy loss summed over tasks, backward, Adam over the routers; vs the dense model's
/// forward + backward (all its parameters requiring grad, as in ordinary training) on the same batches and heads.
/// </summary>
public class TtaStepBenchmarks
{
    private ClipVisionModel dense = null!;
    private AdaptationStep step = null!;

    [ParamsSource(nameof(TaskBatchCounts))]
    public int TaskBatches { get; set; }

    public static IEnumerable<int> TaskBatchCounts => BenchmarkSettings.Quick ? [2] : [VitB32.Experts];

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkSettings.SetThreads();
        dense = VitB32.Dense();
        dense.train();
        step = new AdaptationStep(TaskBatches);
    }

    [Benchmark(Baseline = true, Description = "dense ViT-B/32 forward + backward")]
    public void DenseForwardBackward()
    {
        dense.zero_grad();
        step.ForwardBackward(dense);
    }

    [Benchmark(Description = "WEMoE TTA step (batch-reduce, entropy, backward, Adam)")]
    public void TtaStep() => step.Run();

    [GlobalCleanup]
    public void Cleanup()
    {
        step.Dispose();
        dense.Dispose();
    }
}
