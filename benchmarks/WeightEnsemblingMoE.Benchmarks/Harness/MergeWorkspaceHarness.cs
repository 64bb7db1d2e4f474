using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// Why the per-sample merge is slow (benchmark 1 and 2): the merged weight sets W + R·τ ([B, out·in], 151 MB for one
/// ViT-B/32 MLP weight at B = 16) written into fresh memory (page faults on every call) vs into a reused workspace, whole
/// or in cache-sized column chunks. Prints the median time and the minor page faults per call (<c>/proc/self/stat</c>).
/// A Stopwatch harness so that the variants run interleaved, in one process, under the same load.
/// </summary>
internal static class MergeWorkspaceHarness
{
    private const int T = 8, B = 16, Tokens = 50;
    private static int D = 768, Hidden = 3072; // in and out features of the weight in the op-level comparison

    public static int Run(string[] args)
    {
        if (args.Length > 0 && args[0] is "mlp" or "model")
        {
            return RunModule(args[0], args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 5);
        }

        int reps = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 7;
        if (args.Length > 2)
        {
            (Hidden, D) = (int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture), int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture));
        }
        BenchmarkSettings.SetThreads();
        torch.manual_seed(0);
        using var noGrad = no_grad();
        var w = randn(Hidden, D).reshape(1, -1);
        var tau = randn(T, (long)Hidden * D) * 1e-3;
        var r = rand(B, T);
        var x = randn(B, Tokens, D);
        var workspace = empty(B, (long)Hidden * D);
        var expected = torch.addmm(w, r, tau, beta: 1, alpha: 1);

        var variants = new (string Name, Func<Tensor> Run)[]
        {
            ("fresh addmm(W, R, tau)", () => torch.addmm(w, r, tau, beta: 1, alpha: 1)),
            ("fresh empty + chunked", () => Chunked(empty(B, (long)Hidden * D), w, r, tau, 1 << 14)),
            ("workspace copy_(W) + addmm_", () => workspace.copy_(w.expand(B, -1)).addmm_(r, tau, beta: 1, alpha: 1)),
            ("workspace chunked 4096", () => Chunked(workspace, w, r, tau, 1 << 12)),
            ("workspace chunked 16384", () => Chunked(workspace, w, r, tau, 1 << 14)),
            ("workspace chunked 65536", () => Chunked(workspace, w, r, tau, 1 << 16)),
            ("copy_ only (151 MB write)", () => workspace.copy_(w.expand(B, -1))),
            ("bmm x·Wsᵀ (reused weights)", () => x.bmm(workspace.view(B, Hidden, D).transpose(1, 2))),
            ("fresh merge + bmm", () => x.bmm(torch.addmm(w, r, tau, beta: 1, alpha: 1).view(B, Hidden, D).transpose(1, 2))),
            ("chunked workspace + bmm", () => x.bmm(Chunked(workspace, w, r, tau, 1 << 16).view(B, Hidden, D).transpose(1, 2))),
            ("row blocks 1.5M/(B·in)", () => RowBlocks(x, workspace, w, r, tau, (3L << 19) / (B * D))),
            ("row blocks 6M/(B·in)", () => RowBlocks(x, workspace, w, r, tau, (3L << 21) / (B * D))),
            ("row blocks 24M/(B·in)", () => RowBlocks(x, workspace, w, r, tau, (3L << 23) / (B * D))),
            ("dense linear x·Wᵀ", () => nn.functional.linear(x, w.view(Hidden, D))),
        };

        foreach (var (name, run) in variants.Take(6))
        {
            using var scope = NewDisposeScope();
            var result = run();
            Console.WriteLine($"check {name,-32} max |diff| = {(result - expected).abs().max().item<float>():E2}");
        }

        var times = variants.Select(_ => new List<double>()).ToArray();
        var faults = variants.Select(_ => new List<long>()).ToArray();
        for (int rep = 0; rep < reps; rep++)
        {
            for (int v = 0; v < variants.Length; v++)
            {
                using var scope = NewDisposeScope();
                long before = MinorFaults();
                var watch = Stopwatch.StartNew();
                variants[v].Run();
                watch.Stop();
                faults[v].Add(MinorFaults() - before);
                times[v].Add(watch.Elapsed.TotalMilliseconds);
            }
        }

        Console.WriteLine($"B = {B}, [{Hidden}, {D}] weight, T = {T}, {reps} interleaved reps, threads {torch.get_num_threads()}");
        for (int v = 0; v < variants.Length; v++)
        {
            var sorted = times[v].Order().ToArray();
            Console.WriteLine(
                $"{variants[v].Name,-32} median {sorted[sorted.Length / 2],8:F1} ms   min {sorted[0],8:F1} ms   minor faults/call {faults[v].Order().ElementAt(faults[v].Count / 2),8}");
        }

        return 0;
    }

    /// <summary>
    /// Per-sample routing, B = 16, no_grad: one WEMoE MLP (dense and sparse p = 0.9 storages) vs the dense MLP
    /// (<c>mlp</c>), or the whole upscaled ViT-B/32 vs the dense one (<c>model</c>); interleaved, medians and ratios.
    /// </summary>
    private static int RunModule(string what, int reps)
    {
        BenchmarkSettings.SetThreads();
        var variants = new List<(string Name, Action Run)>();
        if (what == "mlp")
        {
            var bench = new MoeMlpBenchmarks { B = B };
            bench.Setup();
            variants.Add(("dense MLP", bench.DenseMlp));
            variants.Add(("WEMoE per-sample, dense storage", bench.WemoeDense));
            variants.Add(("WEMoE per-sample, sparse p=0.9", bench.WemoeSparse));
            variants.Add(("WEMoE per-sample, low-rank k=64", bench.WemoeLowRank));
        }
        else
        {
            var bench = new UpscaledModelBenchmarks { B = B };
            bench.Setup();
            variants.Add(("dense ViT-B/32", bench.DenseForward));
            variants.Add(("upscaled WEMoE ViT-B/32", bench.UpscaledForward));
        }

        foreach (var (_, run) in variants)
        {
            run(); // warm-up
        }

        var times = variants.Select(_ => new List<double>()).ToArray();
        var faults = variants.Select(_ => new List<long>()).ToArray();
        for (int rep = 0; rep < reps; rep++)
        {
            for (int v = 0; v < variants.Count; v++)
            {
                long before = MinorFaults();
                var watch = Stopwatch.StartNew();
                variants[v].Run();
                times[v].Add(watch.Elapsed.TotalMilliseconds);
                faults[v].Add(MinorFaults() - before);
            }

            Console.WriteLine($"rep {rep}: {string.Join("  ", times.Select(t => $"{t[^1],8:F0}"))} ms; ratios {string.Join(" ", times.Skip(1).Select(t => $"{t[^1] / times[0][^1]:F2}"))}");
        }

        double baseline = times[0].Order().ElementAt(reps / 2);
        Console.WriteLine($"{what}, B = {B}, {reps} interleaved reps, threads {torch.get_num_threads()}, load {File.ReadAllText("/proc/loadavg").Trim()}");
        for (int v = 0; v < variants.Count; v++)
        {
            double median = times[v].Order().ElementAt(reps / 2);
            var ratios = Enumerable.Range(0, reps).Select(i => times[v][i] / times[0][i]).Order().ToArray();
            Console.WriteLine(
                $"{variants[v].Name,-34} median {median,8:F0} ms  ratio of medians {median / baseline,5:F2}  per-rep ratio median {ratios[reps / 2],5:F2}  faults/call {faults[v].Order().ElementAt(reps / 2),8}");
        }

        return 0;
    }

    /// <summary>target[:, c] = W[c] + R·τ[:, c], chunk by chunk, so that W's and τ's chunks stay in cache.</summary>
    private static Tensor Chunked(Tensor target, Tensor w, Tensor r, Tensor tau, long chunk)
    {
        long n = tau.shape[1];
        for (long start = 0; start < n; start += chunk)
        {
            long size = Math.Min(chunk, n - start);
            using var part = target.narrow(1, start, size);
            using var wPart = w.narrow(1, start, size);
            using var expanded = wPart.expand(target.shape[0], size);
            using var tauPart = tau.narrow(1, start, size);
            part.copy_(expanded).addmm_(r, tauPart, beta: 1, alpha: 1);
        }

        return target;
    }

    /// <summary>y[:, :, rows] = x·(W[rows] + R·τ[:, rows])ᵀ block by block: the merged block never leaves the cache.</summary>
    private static Tensor RowBlocks(Tensor x, Tensor workspace, Tensor w, Tensor r, Tensor tau, long rows)
    {
        long b = x.shape[0];
        var output = empty(b, x.shape[1], Hidden);
        for (long o = 0; o < Hidden; o += rows)
        {
            long size = Math.Min(rows, Hidden - o);
            using var block = workspace.narrow(1, 0, size * D);
            using var wPart = w.narrow(1, o * D, size * D);
            using var expanded = wPart.expand(b, size * D);
            using var tauPart = tau.narrow(1, o * D, size * D);
            block.copy_(expanded).addmm_(r, tauPart, beta: 1, alpha: 1);
            using var weights = block.view(b, size, D).transpose(1, 2);
            using var y = x.bmm(weights);
            using var target = output.narrow(2, o, size);
            target.copy_(y);
        }

        return output;
    }

    /// <summary>Minor page faults of this process so far (field 10 of <c>/proc/self/stat</c>).</summary>
    internal static long MinorFaults()
    {
        var stat = File.ReadAllText("/proc/self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], System.Globalization.CultureInfo.InvariantCulture); // field 10 overall: minflt
    }
}
