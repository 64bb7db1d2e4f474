using System.Globalization;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Tasks;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// Process memory across a long test-time adaptation run (issue 4: memory stays flat): a small CLIP model, 4 experts,
/// 4 tasks, 1000 entropy steps with batch-reduce routing; resident memory is read from /proc/self/status at steps 1, 100,
/// 500 and 1000. <c>adaptation-memory [steps=1000]</c>.
/// </summary>
internal static class AdaptationMemoryHarness
{
    public static int Run(string[] args)
    {
        int steps = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1000;
        torch.manual_seed(0);
        var config = new ClipVisionConfig
        {
            HiddenSize = 64, IntermediateSize = 256, NumHiddenLayers = 4, NumAttentionHeads = 4,
            ImageSize = 28, PatchSize = 4, ProjectionDim = 32,
        };
        using var pretrained = new ClipVisionModel(config);
        var experts = Enumerable.Range(0, 4).Select(_ => Perturbed(pretrained)).ToList();
        var tasks = Enumerable.Range(0, 4).Select(k =>
        {
            var images = randn(256, 3, 28, 28);
            var data = new InMemoryTaskDataset($"task{k}", images, null, 10);
            images.Dispose();
            return new ClassificationTask($"task{k}", data, new LinearClassificationHead(32, 10));
        }).ToList();
        using var upscaled = Upscaler.Upcycle(pretrained, experts);
        var model = upscaled;
        var samples = new SortedDictionary<int, (long Rss, long Anon, long Live)>();
        var progress = new SynchronousProgress(p =>
        {
            if (p.Step is 1 or 100 or 500 || p.Step == steps)
            {
                samples[p.Step] = (Kb("VmRSS:"), Kb("RssAnon:"), DisposeScopeManager.Statistics.ThreadTotalLiveCount);
            }
        });
        new AdaptationTrainer().Adapt(model, tasks, new AdaptationOptions { Steps = steps, BatchSize = 16 }, progress);
        Console.WriteLine("| step | VmRSS MiB | RssAnon MiB | live tensors |");
        Console.WriteLine("| ---: | ---: | ---: | ---: |");
        foreach (var (step, s) in samples)
        {
            Console.WriteLine($"| {step} | {s.Rss / 1024.0:F1} | {s.Anon / 1024.0:F1} | {s.Live} |");
        }

        if (samples.TryGetValue(100, out var at100) && samples.TryGetValue(steps, out var atEnd))
        {
            Console.WriteLine($"RSS at step {steps} / RSS at step 100 = {(double)atEnd.Rss / at100.Rss:F3} (target within 10%)");
        }

        experts.ForEach(e => e.Dispose());
        tasks.ForEach(t => { t.Data.Dispose(); t.Head.Dispose(); });
        return 0;
    }

    private static ClipVisionModel Perturbed(ClipVisionModel pretrained)
    {
        var expert = new ClipVisionModel(pretrained.Config);
        using var noGrad = no_grad();
        var source = pretrained.state_dict();
        foreach (var (name, tensor) in expert.state_dict())
        {
            using var scope = NewDisposeScope();
            tensor.copy_(source[name] + (randn(tensor.shape) * 0.02));
        }

        return expert;
    }

    private static long Kb(string key) =>
        long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith(key, StringComparison.Ordinal)).Split(':')[1].Trim().Split(' ')[0], CultureInfo.InvariantCulture);

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    private sealed class SynchronousProgress(Action<AdaptationProgress> report) : IProgress<AdaptationProgress>
    {
        public void Report(AdaptationProgress value) => report(value);
    }
}
