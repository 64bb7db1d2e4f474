using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using WeightEnsembling.Clip;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks;

/// <summary>
/// Issue 19 item 2: achieved FLOP/s of the dense ViT-B/32 forward, the dense forward + backward and the WEMoE
/// test-time adaptation step, each against a plain float32 GEMM of the same run ([B·N, 768]·[768, 3072] at B = 16,
/// N = 50: the shape of one fc1). FLOPs by formula (<see cref="VitB32Flops"/>); the columns "GFLOP/s" and
/// "of GEMM" (<see cref="FlopRateColumn"/>) divide them by the median time. The step is <see cref="TtaStepBenchmarks"/>'
/// (<see cref="AdaptationStep"/>); the dense forward + backward runs on the same task batches and heads.
/// </summary>
[Config(typeof(Columns))]
public class FlopRateBenchmarks
{
    private Tensor a = null!, b = null!, images = null!;
    private ClipVisionModel dense = null!;
    private AdaptationStep step = null!;

    [ParamsSource(nameof(TaskBatchCounts))]
    public int TaskBatches { get; set; }

    /// <summary>Quick mode: 1 task batch (the rates do not depend on it); full: <see cref="VitB32.Experts"/>, as <see cref="TtaStepBenchmarks"/>.</summary>
    public static IEnumerable<int> TaskBatchCounts => BenchmarkSettings.Quick ? [1] : [VitB32.Experts];

    /// <summary>The FLOPs of one call of the benchmark method <paramref name="method"/>.</summary>
    public static double Flops(string method, int taskBatches) => method switch
    {
        nameof(Gemm) => VitB32Flops.Gemm,
        nameof(DenseForward) => VitB32Flops.DenseForward(AdaptationStep.BatchSize),
        nameof(DenseForwardBackward) => taskBatches * VitB32Flops.DenseForwardBackward(AdaptationStep.BatchSize),
        nameof(TtaStep) => taskBatches * VitB32Flops.TtaBatch(AdaptationStep.BatchSize),
        _ => double.NaN,
    };

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkSettings.SetThreads();
        manual_seed(5);
        a = randn((long)VitB32Flops.GemmRows, (long)VitB32Flops.D);
        b = randn((long)VitB32Flops.D, (long)VitB32Flops.F);
        images = randn(AdaptationStep.BatchSize, 3, 224, 224);
        dense = VitB32.Dense();
        dense.train(); // CLIP has no dropout or batch norm: train and eval compute the same.
        step = new AdaptationStep(TaskBatches);
    }

    [Benchmark(Baseline = true, Description = "GEMM [800, 768]·[768, 3072] float32")]
    public void Gemm()
    {
        using var scope = NewDisposeScope();
        a.mm(b);
    }

    [Benchmark(Description = "dense ViT-B/32 forward, B = 16")]
    public void DenseForward()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        dense.GetImageFeatures(images);
    }

    [Benchmark(Description = "dense ViT-B/32 forward + backward (TTA batches)")]
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

    private sealed class Columns : ManualConfig
    {
        public Columns() => AddColumn(new FlopRateColumn(ofGemm: false), new FlopRateColumn(ofGemm: true));
    }
}
