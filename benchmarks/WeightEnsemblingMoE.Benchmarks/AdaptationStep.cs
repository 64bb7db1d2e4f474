using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Moe;
using WeightEnsembling.Tasks;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks;

/// <summary>
/// The test-time adaptation step that <see cref="TtaStepBenchmarks"/> and <see cref="FlopRateBenchmarks"/> time: the
/// shared upscaled ViT-B/32 (<see cref="VitB32.SharedUpscaled"/>) in batch-reduce routing, one batch of
/// <see cref="BatchSize"/> random images per task with a random linear task head (seed 3), entropy summed over the
/// tasks, backward, Adam (lr 1e-4) over the routers.
/// </summary>
internal sealed class AdaptationStep : IDisposable
{
    public const int BatchSize = 16, Classes = 10;
    private readonly optim.Optimizer adam;

    public AdaptationStep(int taskBatches)
    {
        Upscaled = VitB32.SharedUpscaled();
        Upscaled.Model.train();
        Upscaled.RoutingMode = RoutingMode.BatchReduce;
        adam = optim.Adam(Upscaled.TrainableParameters(), lr: 1e-4);
        torch.manual_seed(3);
        Batches = Enumerable.Range(0, taskBatches).Select(_ => randn(BatchSize, 3, 224, 224)).ToArray();
        Heads = Enumerable.Range(0, taskBatches).Select(_ => randn(512, Classes) * 0.05).ToArray();
    }

    public UpscaledModel Upscaled { get; }

    public Tensor[] Batches { get; }

    public Tensor[] Heads { get; }

    /// <summary>One adaptation step: zero the routers' gradients, forward + entropy + backward, Adam.</summary>
    public void Run()
    {
        adam.zero_grad();
        ForwardBackward(Upscaled.Model);
        adam.step();
    }

    /// <summary>Forward of <paramref name="model"/> on every task batch, entropy of its head's logits summed, backward.</summary>
    public void ForwardBackward(ClipVisionModel model)
    {
        using var scope = NewDisposeScope();
        Tensor? loss = null;
        for (int t = 0; t < Batches.Length; t++)
        {
            var entropy = EntropyLoss.Compute(model.GetImageFeatures(Batches[t]).matmul(Heads[t]));
            loss = loss is null ? entropy : loss + entropy;
        }

        loss!.backward();
    }

    public void Dispose() => adam.Dispose();
}
