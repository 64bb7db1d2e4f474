using BenchmarkDotNet.Running;

// Runs the benchmarks chosen on the command line (BenchmarkDotNet's switcher); see docs/benchmarks.md.
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
