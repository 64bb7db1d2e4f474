using BenchmarkDotNet.Attributes;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Moe;
using WeightEnsembling.Tasks;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks;

/// <summary>
/// Benchmark 3: one test-time adaptation step of the upscaled ViT-B/32 (batch-reduce routing): forward on each task's
/// batch of 16 images, task head, entropy loss summed over tasks, backward, Adam over the routers; vs the dense model's
/// forward + backward (all its parameters requiring grad, as in ordinary training) on the same batches and heads.
/// </summary>
public class TtaStepBenchmarks
{
    private const int BatchSize = 16, Classes = 10;
    private ClipVisionModel dense = null!;
    private UpscaledModel upscaled = null!;
    private optim.Optimizer adam = null!;
    private Tensor[] batches = null!, heads = null!;

    [ParamsSource(nameof(TaskBatchCounts))]
    public int TaskBatches { get; set; }

    public static IEnumerable<int> TaskBatchCounts => BenchmarkSettings.Quick ? [2] : [VitB32.Experts];

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkSettings.SetThreads();
        dense = VitB32.Dense();
        dense.train();
        upscaled = VitB32.SharedUpscaled();
        upscaled.Model.train();
        upscaled.RoutingMode = RoutingMode.BatchReduce;
        adam = optim.Adam(upscaled.TrainableParameters(), lr: 1e-4);
        torch.manual_seed(3);
        batches = Enumerable.Range(0, TaskBatches).Select(_ => randn(BatchSize, 3, 224, 224)).ToArray();
        heads = Enumerable.Range(0, TaskBatches).Select(_ => randn(512, Classes) * 0.05).ToArray();
    }

    [Benchmark(Baseline = true, Description = "dense ViT-B/32 forward + backward")]
    public void DenseForwardBackward()
    {
        dense.zero_grad();
        Step(dense);
    }

    [Benchmark(Description = "WEMoE TTA step (batch-reduce, entropy, backward, Adam)")]
    public void TtaStep()
    {
        adam.zero_grad();
        Step(upscaled.Model);
        adam.step();
    }

    private void Step(ClipVisionModel model)
    {
        using var scope = NewDisposeScope();
        Tensor? loss = null;
        for (int t = 0; t < TaskBatches; t++)
        {
            var entropy = EntropyLoss.Compute(model.GetImageFeatures(batches[t]).matmul(heads[t]));
            loss = loss is null ? entropy : loss + entropy;
        }

        loss!.backward();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        adam.Dispose();
        dense.Dispose();
    }
}
