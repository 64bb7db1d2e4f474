using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// Where the sparse storage's per-block time goes (perf3): for one block of the ViT-B/32 fc1 weight ([3072, 768],
/// T = 8, B = 16, 8 M-element merge block, 10% kept), the ops that densify the T task-vector blocks from the bit mask,
/// each timed alone (median of interleaved reps), next to the dense storage's <c>addmm_</c> and the block's <c>bmm</c>.
/// </summary>
internal static class SparsePartsHarness
{
    private const int T = 8, B = 16, Tokens = 50, In = 768;
    private const long Rows = (1L << 23) / (B * In); // 682 rows, as TaskVectorStorage.RowsPerBlock

    public static int Run(string[] args)
    {
        int reps = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 9;
        BenchmarkSettings.SetThreads();
        torch.manual_seed(0);
        using var noGrad = no_grad();
        long k = Rows * In, nb = k / 8;
        var keep = rand(T, k).lt(0.1);
        var weights = tensor(new byte[] { 1, 2, 4, 8, 16, 32, 64, 128 });
        var maskBytes = keep.view(T, nb, 8).to(ScalarType.Byte).mul(weights).sum(2L, type: ScalarType.Int32).to(ScalarType.Byte);
        var values = randn(keep.sum().item<long>());
        var tauDense = zeros(T, k).masked_scatter_(keep, values);
        var scratch = empty(T, k);
        var block = empty(B, k);
        var r = rand(B, T);
        var x = randn(B, Tokens, In);
        var flatIndex = keep.view(-1).nonzero().view(-1);
        var shifts = arange(8, ScalarType.Byte);
        var taus = Enumerable.Range(0, T).Select(_ => randn(Rows, In)).ToList();
        using var storage = new WeightEnsembling.TaskVectors.SparseTaskVectorStorage(taus, 0.9);

        var variants = new (string Name, Func<Tensor> Run)[]
        {
            ("unpack: (bytes & w).ne(0)", () => maskBytes.unsqueeze(-1).bitwise_and(weights).ne(0)),
            ("unpack: (bytes >> s) & 1 .to(bool)", () => maskBytes.unsqueeze(-1).bitwise_right_shift(shifts).bitwise_and(1).to(ScalarType.Bool)),
            ("zero_ scratch", () => scratch.zero_()),
            ("masked_scatter_ (bool given)", () => scratch.masked_scatter_(keep, values)),
            ("index_put_ flat (indices given)", () => scratch.view(-1).index_put_(values, flatIndex)),
            ("nonzero of bool", () => keep.view(-1).nonzero()),
            ("masked_scatter_ via index: zero+unpack+scatter", () => scratch.zero_().masked_scatter_(maskBytes.unsqueeze(-1).bitwise_and(weights).ne(0).view(T, k), values)),
            ("storage densify, managed (new [T, k])", () => storage.DenseRange(0, k, managed: true)),
            ("storage densify, tensor ops (new [T, k])", () => storage.DenseRange(0, k, managed: false)),
            ("addmm_ block += R·tau (dense storage)", () => block.addmm_(r, tauDense, beta: 1, alpha: 1)),
            ("bmm x·blockᵀ", () => x.bmm(block.view(B, Rows, In).transpose(1, 2))),
        };

        var times = variants.Select(_ => new List<double>()).ToArray();
        for (int rep = 0; rep < reps; rep++)
        {
            for (int v = 0; v < variants.Length; v++)
            {
                using var scope = NewDisposeScope();
                var watch = Stopwatch.StartNew();
                variants[v].Run();
                times[v].Add(watch.Elapsed.TotalMilliseconds);
            }
        }

        Console.WriteLine($"one fc1 block [{T}, {k}], B = {B}, {reps} reps, threads {torch.get_num_threads()}, load {File.ReadAllText("/proc/loadavg").Trim()}");
        for (int v = 0; v < variants.Length; v++)
        {
            var sorted = times[v].Order().ToArray();
            Console.WriteLine($"{variants[v].Name,-48} median {sorted[sorted.Length / 2],8:F2} ms   min {sorted[0],8:F2} ms");
        }

        return 0;
    }
}
