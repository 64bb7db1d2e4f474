using System.Diagnostics;
using TorchSharp;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// A Stopwatch sanity check of the fused per-sample merge (issue 19 item 1), NOT a benchmark: one ViT-B/32 MLP
/// (fc1 [3072, 768] and fc2 [768, 3072], GELU between), N = 50 tokens, T = 8, float32, dense storage, variants run
/// interleaved in one process so that they share the machine's load. Prints the median and minimum per variant and the
/// ratio of medians to the dense MLP. `fused-merge [reps] [batch]`.
/// </summary>
internal static class FusedMergeHarness
{
    private const int D = 768, Hidden = 3072, Tokens = 50, Tasks = 8;

    public static int Run(string[] args)
    {
        int reps = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 5;
        int batch = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 16;
        torch.set_num_threads(Environment.ProcessorCount);
        using var generator = new Generator(1);
        var x = randn(new long[] { batch, Tokens, D }, generator: generator);
        var w1 = randn(new long[] { Hidden, D }, generator: generator) * 0.02;
        var b1 = randn(new long[] { Hidden }, generator: generator) * 0.02;
        var w2 = randn(new long[] { D, Hidden }, generator: generator) * 0.02;
        var b2 = randn(new long[] { D }, generator: generator) * 0.02;
        using var tau1 = new DenseTaskVectorStorage(randn(new long[] { Tasks, Hidden, D }, generator: generator) * 0.01);
        using var tau2 = new DenseTaskVectorStorage(randn(new long[] { Tasks, D, Hidden }, generator: generator) * 0.01);
        var r = softmax(randn(new long[] { batch, Tasks }, generator: generator), 1);

        Tensor Dense() => nn.functional.linear(nn.functional.gelu(nn.functional.linear(x, w1, b1)), w2, b2);
        Tensor PerSample(Tensor routing) => tau2.BatchedLinear(nn.functional.gelu(tau1.BatchedLinear(x, routing, w1, b1)), routing, w2, b2);

        var variants = new List<(string Name, Func<double> Run)>
        {
            ("dense MLP (no_grad)", () => Time(() => { using var g = no_grad(); Dense().Dispose(); })),
            ("per-sample, libtorch addmm_ blocks (no_grad)", () => Time(() => { using var g = no_grad(); With(false, 0, 0, () => PerSample(r)); })),
            ("per-sample, fused merge, 1 thread (no_grad)", () => Time(() => { using var g = no_grad(); With(true, 1, 0, () => PerSample(r)); })),
            ("per-sample, fused merge, 2 threads (no_grad)", () => Time(() => { using var g = no_grad(); With(true, 2, 0, () => PerSample(r)); })),
            ("per-sample, fused, 2 threads, 2 M-element blocks (no_grad)", () => Time(() => { using var g = no_grad(); With(true, 2, 1L << 21, () => PerSample(r)); })),
            ("per-sample, fused, 2 threads, 512 K-element blocks (no_grad)", () => Time(() => { using var g = no_grad(); With(true, 2, 1L << 19, () => PerSample(r)); })),
            ("merge only, fc1's B weight sets in 8 M blocks: libtorch addmm_", () => Time(() => MergeOnly(tau1, r, w1, fused: false))),
            ("merge only, fc1 in 8 M blocks: fused, 1 thread", () => Time(() => MergeOnly(tau1, r, w1, fused: true, threads: 1))),
            ("merge only, fc1 in 8 M blocks: fused, 2 threads", () => Time(() => MergeOnly(tau1, r, w1, fused: true, threads: 2))),
            ("dense MLP forward + backward (x requires grad)", () => Time(() =>
            {
                using var s = NewDisposeScope();
                var xg = x.clone().requires_grad_(true);
                nn.functional.linear(nn.functional.gelu(nn.functional.linear(xg, w1, b1)), w2, b2).sum().backward();
            })),
            ("per-sample forward + backward, materialised (R requires grad)", () => Time(() => With(false, 0, 0, () => Backward(PerSample, r)))),
            ("per-sample forward + backward, fused function (R requires grad)", () => Time(() => With(true, 0, 0, () => Backward(PerSample, r)))),
        };

        Console.WriteLine($"fused-merge: B = {batch}, N = {Tokens}, T = {Tasks}, ViT-B/32 MLP, {reps} interleaved reps, threads {torch.get_num_threads()}, load {File.ReadAllText("/proc/loadavg").Trim()}");
        foreach (var (_, run) in variants)
        {
            run(); // warm-up
        }

        var times = variants.Select(_ => new List<double>()).ToList();
        for (int rep = 0; rep < reps; rep++)
        {
            for (int v = 0; v < variants.Count; v++)
            {
                times[v].Add(variants[v].Run());
            }
        }

        double denseMedian = Median(times[0]);
        double denseBackward = Median(times[9]);
        for (int v = 0; v < variants.Count; v++)
        {
            double median = Median(times[v]);
            double baseline = v < 9 ? denseMedian : denseBackward;
            Console.WriteLine($"{variants[v].Name,-68} median {median,8:F1} ms  min {times[v].Min(),8:F1} ms  ratio {median / baseline:F2}");
        }

        Console.WriteLine($"load after: {File.ReadAllText("/proc/loadavg").Trim()}");
        return 0;
    }

    /// <summary>Forward and backward of the per-sample MLP with the routing requiring grad.</summary>
    private static Tensor Backward(Func<Tensor, Tensor> perSample, Tensor r)
    {
        var rg = r.clone().requires_grad_(true);
        var y = perSample(rg);
        y.sum().backward();
        return y;
    }

    /// <summary>The merge of all B weight sets of one layer, block by block into one reused buffer (no bmm).</summary>
    private static void MergeOnly(DenseTaskVectorStorage storage, Tensor r, Tensor w, bool fused, int threads = 0)
    {
        using var scope = NewDisposeScope();
        long b = r.shape[0], n = w.numel(), blockElements = TaskVectorStorage.BlockElements;
        long chunk = Math.Max(1, blockElements / b);
        var buffer = empty(b * chunk);
        var flat = storage.TaskVectors.view(storage.TaskCount, -1);
        var merge = FusedMergeKernel.Prepare(flat, r, w.reshape(-1));
        if (threads > 0)
        {
            merge.Threads = threads;
        }

        var flatW = w.reshape(1, -1);
        for (long start = 0; start < n; start += chunk)
        {
            using var inner = NewDisposeScope();
            long len = Math.Min(chunk, n - start);
            var block = buffer.narrow(0, 0, b * len).view(b, len);
            if (fused)
            {
                merge.Write(block, start, len);
            }
            else
            {
                block.copy_(flatW.narrow(1, start, len).expand(b, len)).addmm_(r, flat.narrow(1, start, len), beta: 1, alpha: 1);
            }
        }
    }

    private static void With(bool fused, int threads, long blockElements, Func<Tensor> body)
    {
        using var scope = NewDisposeScope();
        FusedMergeKernel.Enabled = fused;
        FusedMergeKernel.MaxThreads = threads;
        TaskVectorStorage.BlockElementsForTests = blockElements;
        try
        {
            body();
        }
        finally
        {
            FusedMergeKernel.Enabled = true;
            FusedMergeKernel.MaxThreads = 0;
            TaskVectorStorage.BlockElementsForTests = 0;
        }
    }

    private static double Time(Action action)
    {
        var watch = Stopwatch.StartNew();
        action();
        return watch.Elapsed.TotalMilliseconds;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }
}
