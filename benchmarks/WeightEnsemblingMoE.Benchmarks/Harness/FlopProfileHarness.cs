using System.Diagnostics;
using System.Globalization;
using TorchSharp;
using WeightEnsembling.Clip;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// Issue 19 item 2, where the dense forward's time goes: one ViT-B/32 encoder layer (B = 16, N = 50, D = 768,
/// MLP 3072), each op group of its forward timed alone (median and minimum of interleaved repetitions, no grad), with
/// its GEMM-class FLOPs and achieved GFLOP/s next to a plain [B·N, 768]·[768, 3072] GEMM of the same run. The attention
/// core and the quick-GELU are timed both ways (the previous eager formula and the library's present one), and the
/// whole layer both ways, forward and forward + backward. Indicative only on a loaded machine: the load average is
/// printed before and after.
/// </summary>
internal static class FlopProfileHarness
{
    private const int B = 16, N = 50, D = 768, F = 3072, Heads = 12, HeadDim = D / Heads;

    public static int Run(string[] args)
    {
        int reps = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 7;
        if (args.Length > 1)
        {
            torch.set_num_threads(int.Parse(args[1], CultureInfo.InvariantCulture));
        }
        else
        {
            BenchmarkSettings.SetThreads();
        }

        Console.WriteLine(
            $"threads: intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}, " +
            $"OMP_NUM_THREADS={Environment.GetEnvironmentVariable("OMP_NUM_THREADS") ?? "(unset)"}, " +
            $"MKL_NUM_THREADS={Environment.GetEnvironmentVariable("MKL_NUM_THREADS") ?? "(unset)"}, cores {Environment.ProcessorCount}");
        Console.WriteLine($"load before: {File.ReadAllText("/proc/loadavg").Trim()}");

        torch.manual_seed(0);
        using var layer = new ClipEncoderLayer(new ClipVisionConfig());
        var attention = (ClipAttention)layer.SelfAttention;
        var mlp = (ClipMlp)layer.Mlp;
        var x = randn(B, N, D);
        var a = randn(B * N, D);
        var w = randn(D, F);
        Tensor q, k, v, h;
        using (no_grad())
        {
            h = layer.LayerNorm1.forward(x);
            q = Heads4(attention.GetLinearLayer("q_proj").forward(h));
            k = Heads4(attention.GetLinearLayer("k_proj").forward(h));
            v = Heads4(attention.GetLinearLayer("v_proj").forward(h));
        }

        var hidden = randn(B, N, F);
        var context = randn(B, N, D);
        double scale = Math.Pow(HeadDim, -0.5);
        const double M = B * N;
        double projection = 2 * M * D * D, core = 4.0 * B * N * N * D, fc = 2 * M * D * F;

        var groups = new (string Name, double Flops, Func<Tensor> Run)[]
        {
            ("GEMM [800, 768]·[768, 3072] (reference)", fc, () => a.mm(w)),
            ("layer_norm1", 0, () => layer.LayerNorm1.forward(x)),
            ("q, k, v projections (3 linear)", 3 * projection, () =>
            {
                var p = attention.GetLinearLayer("q_proj").forward(h);
                p = attention.GetLinearLayer("k_proj").forward(h);
                return attention.GetLinearLayer("v_proj").forward(h);
            }),
            ("q, k, v as one linear (candidate, not adopted)", 3 * projection, () =>
            {
                var weight = torch.cat([attention.GetLinearLayer("q_proj").weight!, attention.GetLinearLayer("k_proj").weight!, attention.GetLinearLayer("v_proj").weight!]);
                var bias = torch.cat([attention.GetLinearLayer("q_proj").bias!, attention.GetLinearLayer("k_proj").bias!, attention.GetLinearLayer("v_proj").bias!]);
                return nn.functional.linear(h, weight, bias);
            }),
            ("attention core, eager (old)", core, () => EagerCore(q, k, v, scale)),
            ("attention core, scaled_dot_product_attention", core, () =>
                nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)),
            ("out_proj", projection, () => attention.GetLinearLayer("out_proj").forward(context)),
            ("residual add", 0, () => x + context),
            ("fc1", fc, () => mlp.GetLinearLayer("fc1").forward(x)),
            ("quick_gelu x·σ(1.702x) (old, 3 ops)", 0, () => hidden * torch.sigmoid(hidden * 1.702)),
            ("quick_gelu, library (one temporary, same bits)", 0, () => ClipMlp.QuickGelu(hidden)),
            ("quick_gelu silu(1.702x)/1.702 (not adopted: other bits)", 0, () => nn.functional.silu(hidden * 1.702).div_(1.702)),
            ("fc2", fc, () => mlp.GetLinearLayer("fc2").forward(hidden)),
            ("whole layer, eager formulas (old)", 4 * projection + core + 2 * fc, () => OldLayer(layer, x)),
            ("whole layer, library (new)", 4 * projection + core + 2 * fc, () => layer.forward(x)),
        };

        var times = groups.Select(_ => new List<double>()).ToArray();
        for (int rep = 0; rep < reps; rep++)
        {
            for (int g = 0; g < groups.Length; g++)
            {
                using var noGrad = no_grad();
                using var scope = NewDisposeScope();
                var watch = Stopwatch.StartNew();
                groups[g].Run();
                times[g].Add(watch.Elapsed.TotalMilliseconds);
            }
        }

        // Forward + backward of the whole layer (every parameter requiring grad), old vs new, interleaved.
        var trainTimes = new[] { new List<double>(), new List<double>() };
        Func<Tensor>[] train = [() => OldLayer(layer, x), () => layer.forward(x)];
        for (int rep = 0; rep < reps; rep++)
        {
            for (int t = 0; t < 2; t++)
            {
                layer.zero_grad();
                using var scope = NewDisposeScope();
                var watch = Stopwatch.StartNew();
                train[t]().sum().backward();
                trainTimes[t].Add(watch.Elapsed.TotalMilliseconds);
            }
        }

        double gemmRate = fc / Median(times[0]) / 1e6;
        Console.WriteLine($"one ViT-B/32 layer, B = {B}, N = {N}; {reps} interleaved reps; median (min) ms; GFLOP/s from the median; % of the GEMM's rate");
        for (int g = 0; g < groups.Length; g++)
        {
            Print(groups[g].Name, times[g], groups[g].Flops, gemmRate);
        }

        double layerTrain = 3 * (4 * projection + core + 2 * fc);
        Print("whole layer f+b, eager formulas (old)", trainTimes[0], layerTrain, gemmRate);
        Print("whole layer f+b, library (new)", trainTimes[1], layerTrain, gemmRate);
        Console.WriteLine($"load after: {File.ReadAllText("/proc/loadavg").Trim()}");
        return 0;
    }

    private static Tensor Heads4(Tensor t) => t.view(B, N, Heads, HeadDim).transpose(1, 2);

    private static Tensor EagerCore(Tensor q, Tensor k, Tensor v, double scale)
    {
        var scores = torch.matmul(q, k.transpose(-1, -2)) * scale;
        return torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(B, N, D);
    }

    // The layer as the library computed it before issue 19 item 2: eager attention, three-op quick-GELU.
    private static Tensor OldLayer(ClipEncoderLayer layer, Tensor x)
    {
        var attention = (ClipAttention)layer.SelfAttention;
        var mlp = (ClipMlp)layer.Mlp;
        var h = layer.LayerNorm1.forward(x);
        var core = EagerCore(
            Heads4(attention.GetLinearLayer("q_proj").forward(h)),
            Heads4(attention.GetLinearLayer("k_proj").forward(h)),
            Heads4(attention.GetLinearLayer("v_proj").forward(h)),
            Math.Pow(HeadDim, -0.5));
        var hidden = x + attention.GetLinearLayer("out_proj").forward(core);
        var inner = mlp.GetLinearLayer("fc1").forward(layer.LayerNorm2.forward(hidden));
        inner = inner * torch.sigmoid(inner * 1.702);
        return hidden + mlp.GetLinearLayer("fc2").forward(inner);
    }

    private static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);

    private static void Print(string name, List<double> ms, double flops, double gemmRate)
    {
        double median = Median(ms), min = ms.Min();
        string rate = flops > 0 ? $"{flops / median / 1e6,8:F1} GFLOP/s {100 * flops / median / 1e6 / gemmRate,5:F0}%" : string.Empty;
        Console.WriteLine($"{name,-52} {median,9:F2} ({min,8:F2}) ms {rate}");
    }
}
