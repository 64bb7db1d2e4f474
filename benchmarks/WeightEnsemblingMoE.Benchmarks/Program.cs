using BenchmarkDotNet.Running;
using WeightEnsembling.Benchmarks.Harness;

// Harnesses measure what BenchmarkDotNet cannot (a whole process's peak memory); everything else is BenchmarkDotNet.
// See docs/benchmarks.md.
if (args.Length > 0 && args[0] == "upcycle-memory")
{
    return UpcycleMemoryHarness.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "adaptation-memory")
{
    return AdaptationMemoryHarness.Run(args[1..]);
}

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
