using System.Diagnostics;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// Peak process memory of upcycling T ViT-B/32-sized experts read from safetensors folders, against the naive way
/// (load all T + 1 models, then build). BenchmarkDotNet cannot measure a whole process's peak, so this is a harness:
/// <c>upcycle-memory prepare DIR [T]</c> writes the models once; <c>upcycle-memory measure DIR lazy|naive</c> runs one
/// upcycle in a fresh process and prints wall time and peak resident memory (anonymous, file-backed, and VmHWM).
/// </summary>
internal static class UpcycleMemoryHarness
{
    public static int Run(string[] args)
    {
        if (args.Length < 2)
        {
            Console.Error.WriteLine("usage: upcycle-memory prepare DIR [experts=8] | upcycle-memory measure DIR lazy|naive");
            return 2;
        }

        string dir = args[1];
        return args[0] switch
        {
            "prepare" => Prepare(dir, args.Length > 2 ? int.Parse(args[2]) : 8),
            "measure" => Measure(dir, args.Length > 2 ? args[2] : "lazy"),
            _ => 2,
        };
    }

    private static int Prepare(string dir, int experts)
    {
        var config = new ClipVisionConfig(); // ViT-B/32: the defaults.
        torch.manual_seed(0);
        using var pretrained = new ClipVisionModel(config);
        pretrained.SaveTo(Path.Combine(dir, "pretrained"));
        var source = pretrained.state_dict();
        for (int t = 0; t < experts; t++)
        {
            using var expert = new ClipVisionModel(config);
            using (no_grad())
            {
                foreach (var (name, tensor) in expert.state_dict())
                {
                    using var scope = NewDisposeScope();
                    tensor.copy_(source[name] + (randn(tensor.shape) * 1e-3));
                }
            }

            expert.SaveTo(Path.Combine(dir, $"expert{t}"));
        }

        long bytes = source.Values.Sum(t => t.numel() * t.element_size());
        Console.WriteLine($"wrote pretrained + {experts} experts of {bytes / 1048576.0:F0} MiB each to {dir}");
        return 0;
    }

    private static int Measure(string dir, string mode)
    {
        var expertFolders = Directory.GetDirectories(dir, "expert*").Order(StringComparer.Ordinal).ToArray();
        using var sampler = new PeakMemorySampler();
        var watch = Stopwatch.StartNew();
        // One model's bytes: its safetensors file (the JSON header is a few kB).
        long modelBytes = new FileInfo(Path.Combine(dir, "pretrained", "model.safetensors")).Length;
        if (mode == "naive")
        {
            using var pretrained = ClipVisionModel.FromPretrained(Path.Combine(dir, "pretrained"));
            var experts = expertFolders.Select(ClipVisionModel.FromPretrained).ToList();
            using var upscaled = Upscaler.Upcycle(pretrained, experts);
            experts.ForEach(e => e.Dispose());
        }
        else
        {
            using var upscaled = ModelUpscaler.ForFolder(Path.Combine(dir, "pretrained")).WithExpertFolders(expertFolders).Build();
        }

        watch.Stop();
        var peak = sampler.Stop();
        double model = modelBytes / 1048576.0;
        int t = expertFolders.Length;
        Console.WriteLine($"mode={mode} experts={t} wall={watch.Elapsed.TotalSeconds:F1}s one-model={model:F0}MiB");
        Console.WriteLine($"peak RssAnon={peak.Anon / 1024.0:F0}MiB RssFile={peak.File / 1024.0:F0}MiB VmHWM={peak.Hwm / 1024.0:F0}MiB");
        Console.WriteLine($"target (3 + 0.7 T) x model + 1 GiB = {((3 + (0.7 * t)) * model) + 1024:F0}MiB; peak anonymous / model = {peak.Anon / 1024.0 / model:F2}");
        return 0;
    }

    /// <summary>Samples /proc/self/status every 20 ms and keeps the maxima (kB).</summary>
    private sealed class PeakMemorySampler : IDisposable
    {
        private readonly Thread thread;
        private volatile bool running = true;
        private (long Anon, long File, long Hwm) peak;

        public PeakMemorySampler()
        {
            thread = new Thread(() =>
            {
                while (running)
                {
                    Sample();
                    Thread.Sleep(20);
                }
            }) { IsBackground = true };
            thread.Start();
        }

        public (long Anon, long File, long Hwm) Stop()
        {
            running = false;
            thread.Join();
            Sample();
            return peak;
        }

        public void Dispose() => running = false;

        private void Sample()
        {
            long anon = 0, file = 0, hwm = 0;
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("RssAnon:", StringComparison.Ordinal)) anon = Kb(line);
                else if (line.StartsWith("RssFile:", StringComparison.Ordinal)) file = Kb(line);
                else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = Kb(line);
            }

            peak = (Math.Max(peak.Anon, anon), Math.Max(peak.File, file), Math.Max(peak.Hwm, hwm));
        }

        private static long Kb(string line) => long.Parse(line.Split(':')[1].Trim().Split(' ')[0]);
    }
}
