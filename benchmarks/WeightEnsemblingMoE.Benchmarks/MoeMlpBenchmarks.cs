using BenchmarkDotNet.Attributes;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Moe;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks;

/// <summary>
/// Benchmarks 1 and 4: one WEMoE MLP of ViT-B/32 (D = 768, MLP 3072, 50 tokens, T = 8) with per-sample routing: the
/// library's batched module (dense, sparse p = 0.9, low-rank k = 64 and k = 16 storages) vs the reference's per-sample loop
/// (for each sample merge θ_0 + Σ r τ, then run the MLP) vs the dense MLP. <see cref="PerSampleMerge"/> and
/// <see cref="Copy512MiB"/> give the memory-bandwidth figure.
/// </summary>
public class MoeMlpBenchmarks
{
    private const int D = 768, Hidden = 3072, Tokens = 50, T = 8;
    private ClipMlp dense = null!;
    private WeightEnsemblingMoE denseMoe = null!, sparseMoe = null!, lowRankMoe = null!, lowRank16Moe = null!;
    private Dictionary<string, Tensor> baseWeights = null!;
    private Dictionary<string, Tensor> taskVectors = null!; // name → [T, ...]
    private Tensor input = null!, routing = null!, copySource = null!, copyTarget = null!;

    [ParamsSource(nameof(Batches))]
    public int B { get; set; }

    public static IEnumerable<int> Batches => BenchmarkSettings.Quick ? [16] : [1, 16, 32];

    // Built once per process and shared by every benchmark method and B (building the sparse and low-rank storages
    // takes a while: quantiles and SVDs): BenchmarkDotNet runs GlobalSetup once per method and parameter value.
    private static MoeMlpBenchmarks? shared;

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkSettings.SetThreads();
        if (shared is null)
        {
            torch.manual_seed(0);
            dense = new ClipMlp(D, Hidden, ClipActivation.QuickGelu);
            dense.eval();
            baseWeights = dense.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());
            var experts = Enumerable.Range(0, T)
                .Select(_ => (IReadOnlyDictionary<string, Tensor>)baseWeights.ToDictionary(p => p.Key, p => p.Value + (randn(p.Value.shape) * 1e-3)))
                .ToList();
            taskVectors = baseWeights.Keys.ToDictionary(n => n, n => stack(experts.Select(e => e[n] - baseWeights[n]), 0));
            denseMoe = Build(experts, TaskVectorStorageOptions.Dense());
            sparseMoe = Build(experts, TaskVectorStorageOptions.Sparse(0.9));
            lowRankMoe = Build(experts, TaskVectorStorageOptions.LowRank(64));
            lowRank16Moe = Build(experts, TaskVectorStorageOptions.LowRank(16));
            copySource = randn(128L * 1024 * 1024); // 512 MiB of float32
            copyTarget = empty_like(copySource);
            shared = this;
        }
        else
        {
            (dense, baseWeights, taskVectors, denseMoe, sparseMoe, lowRankMoe, lowRank16Moe, copySource, copyTarget) =
                (shared.dense, shared.baseWeights, shared.taskVectors, shared.denseMoe, shared.sparseMoe, shared.lowRankMoe, shared.lowRank16Moe, shared.copySource, shared.copyTarget);
        }

        torch.manual_seed(B);
        input = randn(B, Tokens, D);
        routing = rand(B, T);
    }

    private WeightEnsemblingMoE Build(List<IReadOnlyDictionary<string, Tensor>> experts, TaskVectorStorageOptions options)
    {
        var mlp = new ClipMlp(D, Hidden, ClipActivation.QuickGelu);
        mlp.load_state_dict(baseWeights);
        mlp.eval();
        var vectors = TaskVectorDictionary.Create(baseWeights, experts, options);
        var module = new WeightEnsemblingMoE(mlp, vectors, Router.Create(2, D, T, 0.3, seed: 1));
        module.eval();
        return module;
    }

    [Benchmark(Baseline = true, Description = "dense MLP")]
    public void DenseMlp()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        dense.forward(input);
    }

    [Benchmark(Description = "reference loop (merge per sample, then MLP)")]
    public void ReferenceLoop()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        // Routing as the module computes it, then one merge and one MLP per sample (the reference's Python loop).
        var r = denseMoe.Gate.call(input).mean([1L]);
        var outputs = new Tensor[B];
        for (int b = 0; b < B; b++)
        {
            var merged = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var (name, theta) in baseWeights)
            {
                var w = theta.clone();
                for (int t = 0; t < T; t++)
                {
                    w.add_(taskVectors[name][t], alpha: r[b, t].item<float>());
                }

                merged[name] = w;
            }

            outputs[b] = dense.Forward(input[b].unsqueeze(0), (layer, x) => nn.functional.linear(x, merged[layer + ".weight"], merged[layer + ".bias"]));
        }

        cat(outputs, 0);
    }

    [Benchmark(Description = "WEMoE per-sample, dense storage")]
    public void WemoeDense() => Run(denseMoe);

    [Benchmark(Description = "WEMoE per-sample, sparse p=0.9")]
    public void WemoeSparse() => Run(sparseMoe);

    [Benchmark(Description = "WEMoE per-sample, low-rank k=64")]
    public void WemoeLowRank() => Run(lowRankMoe);

    /// <summary>
    /// Rank 16, near the crossover: the factored product adds B·N·T·k·(in + out) multiply-adds to the base product where
    /// the dense storage adds its merge's B·T·|W|; they are equal at k = |W| / (N·(in + out)) ≈ 12 for this MLP (N = 50).
    /// </summary>
    [Benchmark(Description = "WEMoE per-sample, low-rank k=16")]
    public void WemoeLowRank16() => Run(lowRank16Moe);

    /// <summary>Only the per-sample merge of fc1 and fc2 weights (W + R·τ → [B, out, in]): memory-bound.</summary>
    [Benchmark(Description = "per-sample merge only (fc1+fc2 weights)")]
    public void PerSampleMerge()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        foreach (var layer in new[] { "fc1", "fc2" })
        {
            var storage = (DenseTaskVectorStorage)denseMoe.TaskVectors[layer + ".weight"];
            storage.BatchedMergedWeights(routing, baseWeights[layer + ".weight"]);
        }
    }

    [Benchmark(Description = "copy 512 MiB (bandwidth)")]
    public void Copy512MiB()
    {
        using var noGrad = no_grad();
        copyTarget.copy_(copySource);
    }

    private void Run(WeightEnsemblingMoE module)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        module.forward(input);
    }
}
