using BenchmarkDotNet.Running;
using WeightEnsembling.Benchmarks;
using WeightEnsembling.Benchmarks.Harness;

// Harnesses measure what BenchmarkDotNet cannot (a whole process's peak memory, storage sizes); everything else is
// BenchmarkDotNet, in process (see BenchmarkSettings). See docs/benchmarks.md.
if (args.Length > 0 && args[0] == "upcycle-memory")
{
    return UpcycleMemoryHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "adaptation-memory")
{
    return AdaptationMemoryHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "sparse-parts")
{
    return SparsePartsHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "merge-workspace")
{
    return MergeWorkspaceHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "fused-merge")
{
    return FusedMergeHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "gemm-probe")
{
    return GemmProbeHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "loader-throughput")
{
    return LoaderThroughputHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "flops-profile")
{
    return FlopProfileHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "half-precision-accuracy")
{
    return HalfPrecisionAccuracyHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "storage-bytes")
{
    return StorageBytesHarness.Run();
}

BenchmarkSettings.Quick = args.Contains("--quick");
var rest = args.Where(a => a != "--quick").ToArray();
var config = BenchmarkSettings.Create();
if (rest.Length == 0)
{
    BenchmarkSwitcher.FromAssembly(typeof(BenchmarkSettings).Assembly).RunAll(config);
}
else
{
    BenchmarkSwitcher.FromAssembly(typeof(BenchmarkSettings).Assembly).Run(rest, config);
}

return 0;
