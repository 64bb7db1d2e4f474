using BenchmarkDotNet.Attributes;
using WeightEnsembling.Clip;
using WeightEnsembling.Moe;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks;

/// <summary>Benchmark 2: the whole upscaled ViT-B/32 (T = 8, every MLP upscaled) with per-sample routing, B = 16, vs a dense ViT-B/32.</summary>
public class UpscaledModelBenchmarks
{
    private ClipVisionModel dense = null!;
    private UpscaledModel upscaled = null!;
    private Tensor images = null!;

    [Params(16)]
    public int B { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkSettings.SetThreads();
        dense = VitB32.Dense();
        dense.eval();
        upscaled = VitB32.SharedUpscaled();
        upscaled.Model.eval();
        upscaled.RoutingMode = RoutingMode.PerSample;
        images = randn(B, 3, 224, 224);
    }

    [Benchmark(Baseline = true, Description = "dense ViT-B/32 forward")]
    public void DenseForward()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        dense.GetImageFeatures(images);
    }

    [Benchmark(Description = "upscaled WEMoE ViT-B/32 forward, per-sample routing")]
    public void UpscaledForward()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        upscaled.Model.GetImageFeatures(images);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        dense.Dispose();
    }
}
