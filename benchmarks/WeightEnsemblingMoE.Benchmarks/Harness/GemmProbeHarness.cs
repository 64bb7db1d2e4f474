using System.Diagnostics;
using TorchSharp;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// A Stopwatch probe of the per-sample GEMM (issue 19), NOT a benchmark: where its time goes on a noisy 2-core VM. Every
/// selected variant runs once per round, rounds interleaved, so that the machine's slow phases hit all of them alike;
/// prints the median and minimum of each. `gemm-probe [reps] [batch] [name filters, comma-separated]`. Variants: libtorch's
/// dense fc1/fc2 products; the kernel on one ViT-B/32 fc1 ([3072, 768], N = 50, T = 8) with 1 or 2 threads, with and
/// with every task vector aliased to one (so that the task vectors come from cache: the memory's share);
/// the kernel right after a libtorch op and 30 ms later, on the OpenMP team and on .NET's pool (libgomp's spinning
/// workers); depth super-block sizes ("sb"); with "mlp" in the filter, a whole WEMoE MLP (2-layer router) against the
/// dense MLP; with "storage" in the filter, the dense, sparse (p = 0.9) and low-rank (k = 64, 16) storages' per-sample
/// fc1 and fc2 (B = 16, and B = 1, N = 1: the panels' production alone; sparse also at p = 0.5 and 0.99); with "iso",
/// the kernel against libtorch's product on one thread with one task vector (the multiply alone).
/// </summary>
internal static unsafe class GemmProbeHarness
{
    private const int D = 768, Hidden = 3072, Tokens = 50, Tasks = 8;

    private readonly struct Aliased(float* tau, int inFeatures) : PerSampleGemmKernel.IPanelSource
    {

        public void Pack(int task, int o0, int width, int k0, int depth, float* dst) =>
            PerSampleGemmKernel.Pack(tau + ((long)o0 * inFeatures) + k0, inFeatures, width, depth, dst);
    }

    public static int Run(string[] args)
    {
        int reps = args.Length > 0 ? int.Parse(args[0]) : 7;
        int batch = args.Length > 1 ? int.Parse(args[1]) : 16;
        torch.set_num_threads(2);
        using var generator = new Generator(1);
        var x = randn(new long[] { batch, Tokens, D }, generator: generator);
        var w1 = randn(new long[] { Hidden, D }, generator: generator) * 0.02;
        var b1 = randn(new long[] { Hidden }, generator: generator) * 0.02;
        var tau = randn(new long[] { Tasks, Hidden, D }, generator: generator) * 0.01;
        var r = softmax(randn(new long[] { batch, Tasks }, generator: generator), 1);
        var xh = randn(new long[] { batch, Tokens, Hidden }, generator: generator);
        var w2 = randn(new long[] { D, Hidden }, generator: generator) * 0.02;
        var tau2 = randn(new long[] { Tasks, D, Hidden }, generator: generator) * 0.01;
        var dense2 = new PerSampleGemmKernel.DensePanels((float*)FusedMergeKernel.Address(tau2), D, Hidden);
        var big = randn(new long[] { 100_000_000 }, generator: generator);
        var dense = new PerSampleGemmKernel.DensePanels((float*)FusedMergeKernel.Address(tau), Hidden, D);
        var aliased = new Aliased((float*)FusedMergeKernel.Address(tau), D);
        var r0 = r.narrow(1, 0, 1).contiguous();

        var all = new List<(string Name, Action Run)>
        {
            ("libtorch linear 2 threads", () => { torch.set_num_threads(2); using var g = no_grad(); nn.functional.linear(x, w1, b1).Dispose(); }),
            ("libtorch linear 1 thread", () => { torch.set_num_threads(1); using var g = no_grad(); nn.functional.linear(x, w1, b1).Dispose(); torch.set_num_threads(2); }),
            ("kernel T=8 2 threads", () => K(dense, Tasks, r, 2)),
            ("kernel T=8 1 thread", () => K(dense, Tasks, r, 1)),
            ("fc2 libtorch 2 threads", () => { torch.set_num_threads(2); using var g = no_grad(); nn.functional.linear(xh, w2).Dispose(); }),
            ("fc2 kernel T=8 2 threads", () => { FusedMergeKernel.MaxThreads = 2; PerSampleGemmKernel.Linear(dense2, Tasks, xh, r, w2, null, D).Dispose(); FusedMergeKernel.MaxThreads = 0; }),
            ("kernel T=8 aliased tau 2 threads", () => K(aliased, Tasks, r, 2)),
            ("kernel T=8 aliased tau 1 thread", () => K(aliased, Tasks, r, 1)),
            ("kernel T=1 2 threads", () => K(dense, 1, r0, 2)),
            ("kernel T=1 1 thread", () => K(dense, 1, r0, 1)),
            ("sum 400 MB 2 threads", () => { torch.set_num_threads(2); big.sum().Dispose(); }),
            ("sum 400 MB 1 thread", () => { torch.set_num_threads(1); big.sum().Dispose(); torch.set_num_threads(2); }),
        };
        if (args.Length > 2 && args[2].Contains("mlp"))
        {
            torch.manual_seed(0);
            var mlp = new WeightEnsembling.Clip.ClipMlp(D, Hidden, WeightEnsembling.Clip.ClipActivation.QuickGelu);
            mlp.eval();
            var baseWeights = mlp.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());
            var experts = Enumerable.Range(0, Tasks)
                .Select(_ => (IReadOnlyDictionary<string, Tensor>)baseWeights.ToDictionary(p => p.Key, p => p.Value + (randn(p.Value.shape) * 1e-3)))
                .ToList();
            var m2 = new WeightEnsembling.Clip.ClipMlp(D, Hidden, WeightEnsembling.Clip.ClipActivation.QuickGelu);
            m2.load_state_dict(baseWeights);
            m2.eval();
            var moe = new WeightEnsembling.Moe.WeightEnsemblingMoE(m2, TaskVectorDictionary.Create(baseWeights, experts, TaskVectorStorageOptions.Dense()), WeightEnsembling.Moe.Router.Create(2, D, Tasks, 0.3, seed: 1));
            moe.eval();
            all.Add(("mlp dense", () => { torch.set_num_threads(2); using var g = no_grad(); using var sc = NewDisposeScope(); mlp.forward(x); }));
            all.Add(("mlp wemoe", () => { torch.set_num_threads(2); using var g = no_grad(); using var sc = NewDisposeScope(); moe.forward(x); }));
            all.Add(("mlp wemoe pool threads", () => { WeightEnsembling.Interop.OpenMPTeam.Enabled = false; torch.set_num_threads(2); using var g = no_grad(); using var sc = NewDisposeScope(); moe.forward(x); WeightEnsembling.Interop.OpenMPTeam.Enabled = true; }));
        }

        if (args.Length > 2 && args[2].Contains("storage"))
        {
            var denseStorage = new DenseTaskVectorStorage(tau.clone());
            var sparseStorage = new SparseTaskVectorStorage(Enumerable.Range(0, Tasks).Select(t => tau[t]).ToList(), 0.9);
            all.Add(("storage dense fc1", () => { torch.set_num_threads(2); using var g = no_grad(); denseStorage.BatchedLinear(x, r, w1, b1).Dispose(); }));
            var lowRank64 = new LowRankTaskVectorStorage(Enumerable.Range(0, Tasks).Select(t => tau[t]).ToList(), 64, null);
            var lowRank16 = new LowRankTaskVectorStorage(Enumerable.Range(0, Tasks).Select(t => tau[t]).ToList(), 16, null);
            all.Add(("storage low-rank k=64 fc1", () => { torch.set_num_threads(2); using var g = no_grad(); lowRank64.BatchedLinear(x, r, w1, b1).Dispose(); }));
            all.Add(("storage low-rank k=16 fc1", () => { torch.set_num_threads(2); using var g = no_grad(); lowRank16.BatchedLinear(x, r, w1, b1).Dispose(); }));
            var denseStorage2 = new DenseTaskVectorStorage(tau2.clone());
            var sparseStorage2 = new SparseTaskVectorStorage(Enumerable.Range(0, Tasks).Select(t => tau2[t]).ToList(), 0.9);
            all.Add(("storage dense fc2", () => { torch.set_num_threads(2); using var g = no_grad(); denseStorage2.BatchedLinear(xh, r, w2, null).Dispose(); }));
            all.Add(("storage sparse p=0.9 fc2", () => { torch.set_num_threads(2); using var g = no_grad(); sparseStorage2.BatchedLinear(xh, r, w2, null).Dispose(); }));
            var x1 = randn(new long[] { 1, 1, D });
            var xh1 = randn(new long[] { 1, 1, Hidden });
            var r1 = r.narrow(0, 0, 1).contiguous();
            all.Add(("storage dense fc1 B=1 N=1", () => { torch.set_num_threads(2); using var g = no_grad(); denseStorage.BatchedLinear(x1, r1, w1, b1).Dispose(); }));
            all.Add(("storage sparse p=0.9 fc1 B=1 N=1", () => { torch.set_num_threads(2); using var g = no_grad(); sparseStorage.BatchedLinear(x1, r1, w1, b1).Dispose(); }));
            all.Add(("storage dense fc2 B=1 N=1", () => { torch.set_num_threads(2); using var g = no_grad(); denseStorage2.BatchedLinear(xh1, r1, w2, null).Dispose(); }));
            all.Add(("storage sparse p=0.9 fc2 B=1 N=1", () => { torch.set_num_threads(2); using var g = no_grad(); sparseStorage2.BatchedLinear(xh1, r1, w2, null).Dispose(); }));
            foreach (var pp in new[] { 0.5, 0.99 })
            {
                var sp = new SparseTaskVectorStorage(Enumerable.Range(0, Tasks).Select(t => tau2[t]).ToList(), pp);
                all.Add(($"storage sparse p={pp} fc2 B=1 N=1", () => { torch.set_num_threads(2); using var g = no_grad(); sp.BatchedLinear(xh1, r1, w2, null).Dispose(); }));
            }

            all.Add(("storage sparse p=0.9 fc1", () => { torch.set_num_threads(2); using var g = no_grad(); sparseStorage.BatchedLinear(x, r, w1, b1).Dispose(); }));
        }

        if (args.Length > 2 && args[2].Contains("iso"))
        {
            // The kernel against libtorch's product on one thread with T = 1 (the merge nearly free): one sample of 800
            // tokens, then 16 samples of 50 or 48 tokens, then depth 256 only (all in one depth block).
            foreach (var (bi, ni, oi, ki, calls) in new[] { (1, 800, Hidden, D, 1), (16, 50, Hidden, D, 1), (16, 48, Hidden, D, 1), (16, 50, Hidden, 256, 3) })
            {
                var xi = randn(new long[] { bi, ni, ki }, generator: generator);
                var wi = randn(new long[] { oi, ki }, generator: generator);
                var taui = randn(new long[] { 1, oi, ki }, generator: generator);
                var ri = ones(new long[] { bi, 1 });
                var densei = new PerSampleGemmKernel.DensePanels((float*)FusedMergeKernel.Address(taui), oi, ki);
                all.Add(($"iso: kernel B={bi} N={ni} O={oi} K={ki} x{calls} 1 thread", () => { FusedMergeKernel.MaxThreads = 1; for (int i = 0; i < calls; i++) PerSampleGemmKernel.Linear(densei, 1, xi, ri, null, null, oi).Dispose(); FusedMergeKernel.MaxThreads = 0; }));
                all.Add(($"iso: libtorch B={bi} N={ni} O={oi} K={ki} x{calls} 1 thread", () => { torch.set_num_threads(1); using var g = no_grad(); for (int i = 0; i < calls; i++) nn.functional.linear(xi, wi).Dispose(); torch.set_num_threads(2); }));
            }
        }

        var small = randn(new long[] { 64, 768 });
        var smallW = randn(new long[] { 768, 768 });
        double last = 0;
        all.Add(("spin: kernel right after a libtorch op", () => { torch.set_num_threads(2); using (no_grad()) { nn.functional.linear(small, smallW).Dispose(); } var w = Stopwatch.StartNew(); K(dense, Tasks, r, 2); last = w.Elapsed.TotalMilliseconds; }));
        all.Add(("spin: kernel 30 ms after a libtorch op", () => { torch.set_num_threads(2); using (no_grad()) { nn.functional.linear(small, smallW).Dispose(); } Thread.Sleep(30); var w = Stopwatch.StartNew(); K(dense, Tasks, r, 2); last = w.Elapsed.TotalMilliseconds; }));

        all.Add(("spin: pool threads, right after a libtorch op", () => { WeightEnsembling.Interop.OpenMPTeam.Enabled = false; torch.set_num_threads(2); using (no_grad()) { nn.functional.linear(small, smallW).Dispose(); } var w = Stopwatch.StartNew(); K(dense, Tasks, r, 2); last = w.Elapsed.TotalMilliseconds; WeightEnsembling.Interop.OpenMPTeam.Enabled = true; }));
        foreach (var sb in new long[] { 1, 2L << 20, 3L << 20, 4L << 20, 6L << 20, 1L << 30 })
        {
            all.Add(($"sb {sb >> 10} KB fc1", () => { PerSampleGemmKernel.SuperBlockBytes = sb; K(dense, Tasks, r, 2); PerSampleGemmKernel.SuperBlockBytes = 3L << 20; }));
            all.Add(($"sb {sb >> 10} KB fc2", () => { PerSampleGemmKernel.SuperBlockBytes = sb; FusedMergeKernel.MaxThreads = 2; PerSampleGemmKernel.Linear(dense2, Tasks, xh, r, w2, null, D).Dispose(); FusedMergeKernel.MaxThreads = 0; PerSampleGemmKernel.SuperBlockBytes = 3L << 20; }));
        }

        static long MinorFaults() => long.Parse(File.ReadAllText("/proc/self/stat").Split(") ")[1].Split(' ')[7]);
        all.Add(("faults: kernel fc2 x10", () => { long f0 = MinorFaults(); for (int i = 0; i < 10; i++) { FusedMergeKernel.MaxThreads = 2; PerSampleGemmKernel.Linear(dense2, Tasks, xh, r, w2, null, D).Dispose(); FusedMergeKernel.MaxThreads = 0; } Console.WriteLine($"minor faults per fc2 kernel call: {(MinorFaults() - f0) / 10.0}"); }));
        all.Add(("faults: libtorch fc2 x10", () => { long f0 = MinorFaults(); for (int i = 0; i < 10; i++) { using var g = no_grad(); nn.functional.linear(xh, w2).Dispose(); } Console.WriteLine($"minor faults per fc2 libtorch call: {(MinorFaults() - f0) / 10.0}"); }));


        var filter = args.Length > 2 ? args[2] : "";
        var variants = all.Where(v => filter.Length == 0 || filter.Split(',').Any(f => v.Name.Contains(f))).ToList();

        void K<TS>(TS s, int t, Tensor rr, int threads) where TS : struct, PerSampleGemmKernel.IPanelSource
        {
            FusedMergeKernel.MaxThreads = threads;
            PerSampleGemmKernel.Linear(s, t, x, rr, w1, b1, Hidden).Dispose();
            FusedMergeKernel.MaxThreads = 0;
        }

        Console.WriteLine($"gemm-probe B={batch} load {File.ReadAllText("/proc/loadavg").Trim()}");
        foreach (var v in variants) v.Run();
        var times = variants.Select(_ => new List<double>()).ToList();
        for (int rep = 0; rep < reps; rep++)
        {
            for (int v = 0; v < variants.Count; v++)
            {
                var w = Stopwatch.StartNew();
                last = -1;
                variants[v].Run();
                times[v].Add(last >= 0 ? last : w.Elapsed.TotalMilliseconds);
            }
        }

        for (int v = 0; v < variants.Count; v++)
        {
            var s = times[v].OrderBy(t => t).ToList();
            Console.WriteLine($"{variants[v].Name,-40} median {s[s.Count / 2],8:F2} ms  min {s[0],8:F2}");
        }

        Console.WriteLine($"load after {File.ReadAllText("/proc/loadavg").Trim()}");
        return 0;
    }
}
