using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace WeightEnsembling.Benchmarks;

/// <summary>
/// The run mode and the BenchmarkDotNet configuration. Benchmarks run in process (<see cref="InProcessEmitToolchain"/>):
/// the benchmark executable already carries libtorch's native files and the build-time libtorch fix, which a generated
/// child project would not. Static state (this mode) therefore reaches the benchmarks' <c>ParamsSource</c>s.
/// </summary>
internal static class BenchmarkSettings
{
    /// <summary>Quick mode (<c>--quick</c>): B = 16 only, 1 warm-up and 3 measured iterations, 2 task batches in the TTA step.</summary>
    public static bool Quick { get; set; }

    /// <summary>
    /// In process, with a one-hour limit per benchmark case instead of BenchmarkDotNet's 5 minutes: on a loaded 2-core
    /// machine one dense ViT-B/32 forward + backward on 2 task batches took a minute, and the case was aborted.
    /// </summary>
    public static InProcessEmitToolchain Toolchain { get; } = new(TimeSpan.FromHours(1), logOutput: true);

    public static IConfig Create()
    {
        var job = Job.Default.WithToolchain(Toolchain);
        job = Quick
            ? job.WithStrategy(RunStrategy.Monitoring).WithWarmupCount(1).WithIterationCount(3).WithInvocationCount(1).WithUnrollFactor(1).WithId("quick")
            : job.WithWarmupCount(2).WithMinIterationCount(5).WithMaxIterationCount(15).WithInvocationCount(1).WithUnrollFactor(1).WithId("full");
        return DefaultConfig.Instance
            .AddJob(job)
            .AddDiagnoser(MemoryDiagnoser.Default)
            .WithOptions(ConfigOptions.DisableOptimizationsValidator);
    }

    /// <summary>libtorch intra-op threads = cores, as the issue asks.</summary>
    public static void SetThreads() => TorchSharp.torch.set_num_threads(Environment.ProcessorCount);
}
