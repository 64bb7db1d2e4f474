using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Diagnostics;
using WeightEnsembling.Models;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Merging;

/// <summary>
/// RegMean (Jin et al., ICLR 2023): every linear weight is the solution of the least-squares problem that makes the
/// merged layer reproduce each fine-tuned layer on that task's inputs, Wᵀ = (Σ_t G̃_t)⁻¹ Σ_t G̃_t W_tᵀ with
/// G_t = X_tᵀ X_t the Gram matrix of the layer's inputs on task t and G̃_t = α G_t + (1 − α) diag(G_t); every other
/// parameter (layer norms, embeddings, biases) is the simple average. Matches FusionBench's <c>regmean</c> for CLIP:
/// the inputs of a linear layer [B, N, in] are flattened over all tokens of all examples and the Gram matrix is divided
/// by the number of rows (examples × tokens), a per-row mean that does not change the merge when every task uses as many
/// examples; α defaults to 0.95. Differences: the system is solved (Cholesky), not inverted, with the ridge fallback of
/// <see cref="RegMeanOptions.RidgeRatio"/>; exactly <see cref="RegMeanOptions.ExampleCount"/> examples are used
/// (FusionBench stops after the first whole batch that reaches it); and <c>visual_projection</c> is merged too.
/// </summary>
public static class RegMean
{
    private const string Method = "regmean";
    private const double MinReciprocalCondition = 1e-12;

    /// <summary>
    /// The Gram matrices XᵀX / rows of the inputs of every linear layer of <paramref name="model"/> on the first
    /// <see cref="RegMeanOptions.ExampleCount"/> examples of <paramref name="dataset"/>: <c>q_proj</c>, <c>k_proj</c>,
    /// <c>v_proj</c>, <c>out_proj</c>, <c>fc1</c> and <c>fc2</c> of every encoder layer (rows = examples × tokens) and
    /// <c>visual_projection</c> (rows = examples), keyed by module name (e.g.
    /// <c>vision_model.encoder.layers.0.mlp.fc1</c>; the weight is that name plus <c>.weight</c>). The model's attention
    /// and MLP slots are temporarily replaced by recording wrappers and restored afterwards: do not use the model
    /// elsewhere meanwhile. Labels are not needed.
    /// </summary>
    /// <param name="model">A plain CLIP model whose slots hold <see cref="ClipAttention"/> and <see cref="ClipMlp"/>.</param>
    /// <param name="dataset">The task's examples.</param>
    /// <param name="options">The options (<see cref="RegMeanOptions.ExampleCount"/>, batch size, shuffle); defaults when null.</param>
    /// <param name="progress">Receives a report after each batch.</param>
    /// <param name="cancellationToken">Checked before each batch.</param>
    /// <returns>New float32 [in, in] tensors owned by the caller.</returns>
    public static Dictionary<string, Tensor> ComputeGramMatrices(
        ClipVisionModel model,
        TaskDataset dataset,
        RegMeanOptions? options = null,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        DataAwareMergeSupport.CheckDataset(dataset, "The dataset", nameof(dataset));
        options ??= new RegMeanOptions();
        options.Validate();
        return Grams(model, dataset, options, progress, 0, 1, cancellationToken);
    }

    /// <summary>
    /// Merges state dicts with precomputed Gram matrices (from <see cref="ComputeGramMatrices"/> or elsewhere). A tensor
    /// <c>m.weight</c> is merged by RegMean when <c>m</c> has a Gram matrix; every other floating-point tensor is the
    /// simple average; other tensors are copied from the first model.
    /// </summary>
    /// <param name="models">The fine-tuned state dicts, at least one, with equal keys and shapes.</param>
    /// <param name="gramMatrices">Per model, its Gram matrices [in, in] by module name; every model has the same modules.</param>
    /// <param name="options">The options (<see cref="RegMeanOptions.Alpha"/>, the fallback); defaults when null.</param>
    /// <param name="logger">Receives a warning for every layer whose fallback is taken. The default value is <see cref="NullLogger.Instance"/>.</param>
    /// <returns>The merged state dict: new tensors in the models' dtypes, owned by the caller.</returns>
    /// <exception cref="ArgumentException">Counts, keys or shapes do not match, or a tensor is not finite; the message names it.</exception>
    /// <exception cref="InvalidOperationException">A summed Gram matrix is ill-conditioned and <see cref="RegMeanOptions.ThrowOnIllConditioned"/> is set.</exception>
    public static Dictionary<string, Tensor> Merge(
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> models,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> gramMatrices,
        RegMeanOptions? options = null,
        ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(gramMatrices);
        options ??= new RegMeanOptions();
        options.Validate();
        if (models.Count == 0)
        {
            throw new ArgumentException("At least one model is needed.", nameof(models));
        }

        if (gramMatrices.Count != models.Count)
        {
            throw new ArgumentException($"{models.Count} models need {models.Count} sets of Gram matrices; got {gramMatrices.Count}.", nameof(gramMatrices));
        }

        using var sums = new Sums(options, logger ?? NullLogger.Instance);
        for (int t = 0; t < models.Count; t++)
        {
            sums.Fold(t, models[t] ?? throw new ArgumentException($"Model {t} is null.", nameof(models)),
                gramMatrices[t] ?? throw new ArgumentException($"The Gram matrices of model {t} are null.", nameof(gramMatrices)));
        }

        return sums.Solve();
    }

    /// <summary>
    /// Runs RegMean end to end: the Gram matrices of each model on its own task (one task at a time; only the running
    /// sums Σ G̃_t and Σ G̃_t W_tᵀ are kept), then the merge. This is the entry point for a benchmark runner.
    /// </summary>
    /// <param name="finetuned">The fine-tuned models, one per task, of one architecture; they are not changed.</param>
    /// <param name="datasets">Each model's task examples (labels not needed), in the same order.</param>
    /// <param name="options">The options; defaults when null.</param>
    /// <param name="progress">Receives a report after each batch.</param>
    /// <param name="cancellationToken">Checked before each batch.</param>
    /// <param name="logger">Receives each task's time and the total (information) and every fallback taken (warning). The default value is <see cref="NullLogger.Instance"/>.</param>
    /// <returns>A new plain model (in eval mode) owned by the caller.</returns>
    public static ClipVisionModel Run(
        IReadOnlyList<ClipVisionModel> finetuned,
        IReadOnlyList<TaskDataset> datasets,
        RegMeanOptions? options = null,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default,
        ILogger? logger = null)
    {
        DataAwareMergeSupport.CheckModelsAndData(finetuned, datasets);
        options ??= new RegMeanOptions();
        options.Validate();
        return RunCore(finetuned.Count, t => (finetuned[t], false), datasets, options, progress, cancellationToken, logger, merged => DataAwareMergeSupport.Build(finetuned[0], merged));
    }

    /// <summary>
    /// Runs RegMean over a model pool: the experts are loaded one at a time (only one is in memory besides the running
    /// sums), each with its own task's data; θ_0 is not used.
    /// </summary>
    /// <param name="modelPool">The experts, one per task.</param>
    /// <param name="datasets">Each expert's task examples (labels not needed), in the pool's order.</param>
    /// <param name="options">The options; defaults when null.</param>
    /// <param name="progress">Receives a report after each batch.</param>
    /// <param name="cancellationToken">Checked before each batch.</param>
    /// <param name="logger">Receives each task's time and the total (information) and every fallback taken (warning). The default value is <see cref="NullLogger.Instance"/>.</param>
    /// <returns>A new plain model (in eval mode) owned by the caller.</returns>
    public static ClipVisionModel Run(
        ModelPool modelPool,
        IReadOnlyList<TaskDataset> datasets,
        RegMeanOptions? options = null,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default,
        ILogger? logger = null)
    {
        DataAwareMergeSupport.CheckPoolAndData(modelPool, datasets);
        options ??= new RegMeanOptions();
        options.Validate();
        return RunCore(modelPool.ExpertCount, t => (modelPool.LoadExpertModel(t), true), datasets, options, progress, cancellationToken, logger, modelPool.BuildModel);
    }

    private static ClipVisionModel RunCore(
        int count,
        Func<int, (ClipVisionModel Model, bool Owned)> modelAt,
        IReadOnlyList<TaskDataset> datasets,
        RegMeanOptions options,
        IProgress<MergeProgress>? progress,
        CancellationToken cancellationToken,
        ILogger? logger,
        Func<IReadOnlyDictionary<string, Tensor>, ClipVisionModel> build)
    {
        logger ??= NullLogger.Instance;
        using var sums = new Sums(options, logger);
        return DataAwareMergeSupport.RunPerTask(
            Method,
            count,
            modelAt,
            datasets,
            (model, t) => Grams(model, datasets[t], options, progress, t, count, cancellationToken),
            sums.Fold,
            sums.Solve,
            build,
            logger);
    }

    private static Dictionary<string, Tensor> Grams(
        ClipVisionModel model, TaskDataset dataset, RegMeanOptions options, IProgress<MergeProgress>? progress, int task, int taskCount,
        CancellationToken cancellationToken)
    {
        var sums = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var rows = new Dictionary<string, long>(StringComparer.Ordinal);
        void Record(string name, Tensor input)
        {
            using var scope = NewDisposeScope();
            var x = input.detach().reshape(-1, input.shape[^1]).to(ScalarType.Float32);
            var xtx = matmul(x.t(), x);
            if (sums.TryGetValue(name, out var sum))
            {
                sum.add_(xtx);
                rows[name] += x.shape[0];
            }
            else
            {
                sums.Add(name, xtx.DetachFromDisposeScope());
                rows.Add(name, x.shape[0]);
            }
        }

        var layers = model.Layers;
        var originals = new List<(ClipEncoderLayer Layer, nn.Module<Tensor, Tensor> Attention, nn.Module<Tensor, Tensor> Mlp)>();
        var recorders = new List<GramRecorder>();
        try
        {
            for (int i = 0; i < layers.Count; i++)
            {
                var layer = layers[i];
                if (layer.SelfAttention is not ClipAttention attention || layer.Mlp is not ClipMlp mlp)
                {
                    throw new ArgumentException(
                        $"RegMean needs a plain CLIP model: encoder layer {i} holds {layer.SelfAttention.GetType().Name} and {layer.Mlp.GetType().Name} instead of ClipAttention and ClipMlp.",
                        nameof(model));
                }

                string prefix = $"vision_model.encoder.layers.{i}";
                var attentionRecorder = new GramRecorder($"{prefix}.self_attn", attention, attention.GetLinearLayer, Record);
                recorders.Add(attentionRecorder);
                var mlpRecorder = new GramRecorder($"{prefix}.mlp", mlp, mlp.GetLinearLayer, Record);
                recorders.Add(mlpRecorder);
                originals.Add((layer, attention, mlp));
                layer.SelfAttention = attentionRecorder;
                layer.Mlp = mlpRecorder;
            }

            var device = DeviceOf.Module(model);
            long total = DataAwareMergeSupport.ExampleTotal(dataset, options.ExampleCount), done = 0;
            using var noGrad = no_grad();
            foreach (var batch in DataAwareMergeSupport.Examples(dataset, options.ExampleCount, options.BatchSize, options.Shuffle, options.Seed))
            {
                using (batch)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    using var scope = NewDisposeScope();
                    using var output = model.forward(DeviceOf.On(batch.Images, device));
                    if (model.HasProjection)
                    {
                        Record("visual_projection", output.PooledOutput);
                    }

                    done += batch.Count;
                }

                progress?.Report(new MergeProgress(Method, dataset.Name, task, taskCount, done, total));
            }

            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var (name, sum) in sums)
            {
                result.Add(name, sum.div_(rows[name]));
            }

            sums.Clear();
            return result;
        }
        finally
        {
            foreach (var (layer, attention, mlp) in originals)
            {
                layer.SelfAttention = attention;
                layer.Mlp = mlp;
            }

            foreach (var recorder in recorders)
            {
                recorder.Dispose();
            }

            DataAwareMergeSupport.DisposeAll(sums.Values);
        }
    }

    /// <summary>The running sums of one merge: Σ G̃_t and Σ G̃_t W_tᵀ per module, Σ θ_t per tensor (float32).</summary>
    private sealed class Sums(RegMeanOptions options, ILogger logger) : IDisposable
    {
        private readonly Dictionary<string, Tensor> grams = new(StringComparer.Ordinal);
        private readonly Dictionary<string, Tensor> products = new(StringComparer.Ordinal);
        private readonly Dictionary<string, Tensor> totals = new(StringComparer.Ordinal);
        private readonly Dictionary<string, Tensor> copied = new(StringComparer.Ordinal);
        private readonly Dictionary<string, (ScalarType Type, long[] Shape)> reference = new(StringComparer.Ordinal);
        private HashSet<string>? modules;
        private int count;

        public void Fold(int t, IReadOnlyDictionary<string, Tensor> weights, IReadOnlyDictionary<string, Tensor> gramsOfTask)
        {
            DataAwareMergeSupport.CheckKeys(reference, t, weights);
            if (modules is null)
            {
                modules = new HashSet<string>(gramsOfTask.Keys, StringComparer.Ordinal);
            }
            else if (!modules.SetEquals(gramsOfTask.Keys))
            {
                throw new ArgumentException(
                    $"The Gram matrices of model {t} cover other modules than those of model 0: missing [{string.Join(", ", modules.Except(gramsOfTask.Keys))}], extra [{string.Join(", ", gramsOfTask.Keys.Except(modules))}].",
                    "gramMatrices");
            }

            foreach (var module in modules)
            {
                using var scope = NewDisposeScope();
                var gram = gramsOfTask[module] ?? throw new ArgumentException($"The Gram matrix of '{module}' of model {t} is null.", "gramMatrices");
                if (!weights.TryGetValue(module + ".weight", out var weight) || weight.dim() != 2)
                {
                    throw new ArgumentException($"Model {t} has no 2-D linear weight '{module}.weight' for the Gram matrix of '{module}'.", "gramMatrices");
                }

                long inputs = weight.shape[1];
                if (gram.dim() != 2 || gram.shape[0] != inputs || gram.shape[1] != inputs)
                {
                    throw new ArgumentException(
                        $"The Gram matrix of '{module}' of model {t} has shape {DataAwareMergeSupport.Shape(gram)}; its weight {DataAwareMergeSupport.Shape(weight)} needs [{inputs}, {inputs}].",
                        "gramMatrices");
                }

                var g = gram.to(ScalarType.Float32);
                if (!g.isfinite().all().item<bool>() || g.diagonal().lt(0).any().item<bool>())
                {
                    throw new ArgumentException($"The Gram matrix of '{module}' of model {t} has NaN, infinite or negative diagonal values.", "gramMatrices");
                }

                var reduced = (g * options.Alpha) + diag(g.diagonal() * (1 - options.Alpha));
                var product = matmul(reduced, weight.to(ScalarType.Float32).t());
                DataAwareMergeSupport.AddTo(grams, module, reduced);
                DataAwareMergeSupport.AddTo(products, module, product);
            }

            foreach (var (name, tensor) in weights)
            {
                using var scope = NewDisposeScope();
                if (tensor.is_floating_point())
                {
                    DataAwareMergeSupport.AddTo(totals, name, tensor.to(ScalarType.Float32));
                }
                else if (t == 0)
                {
                    copied.Add(name, tensor.clone().DetachFromDisposeScope());
                }
            }

            count++;
        }

        public Dictionary<string, Tensor> Solve()
        {
            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            try
            {
                foreach (var (name, (type, _)) in reference)
                {
                    using var scope = NewDisposeScope();
                    Tensor merged;
                    if (copied.TryGetValue(name, out var copy))
                    {
                        merged = copy.clone();
                    }
                    else
                    {
                        var average = totals[name].to(ScalarType.Float64) / count;
                        string module = name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : name;
                        merged = modules is not null && name != module && modules.Contains(module) ? SolveLayer(module, average) : average;
                        merged = merged.to(type);
                        if (!merged.isfinite().all().item<bool>())
                        {
                            throw new ArgumentException($"The merged tensor '{name}' contains NaN or Inf.");
                        }
                    }

                    result.Add(name, merged.detach().MoveToOuterDisposeScope());
                }
            }
            catch
            {
                DataAwareMergeSupport.DisposeAll(result.Values);
                throw;
            }

            return result;
        }

        public void Dispose()
        {
            foreach (var map in new[] { grams, products, totals, copied })
            {
                DataAwareMergeSupport.DisposeAll(map.Values);
                map.Clear();
            }
        }

        /// <summary>Wᵀ = A⁻¹ B by Cholesky, or the ridge fallback towards the average weight W̄ (float64).</summary>
        private Tensor SolveLayer(string module, Tensor average)
        {
            var a = grams[module].to(ScalarType.Float64);
            var b = products[module].to(ScalarType.Float64);
            var (factor, info) = linalg.cholesky_ex(a);
            if (info.item<int>() == 0)
            {
                var diagonal = factor.diagonal();
                double ratio = (diagonal.min() / diagonal.max()).item<double>();
                if (ratio * ratio >= MinReciprocalCondition)
                {
                    return cholesky_solve(b, factor).t();
                }
            }

            if (options.ThrowOnIllConditioned)
            {
                throw new InvalidOperationException(
                    $"The summed Gram matrix of '{module}' is singular or ill-conditioned (its inputs span too few directions); RegMean cannot solve for '{module}.weight'.");
            }

            double epsilon = options.RidgeRatio * a.diagonal().mean().item<double>();
            if (!(epsilon > 0) || double.IsInfinity(epsilon))
            {
                Log.RegMeanAverageFallback(logger, module);
                return average; // A zero Gram matrix: no task says anything about this layer.
            }

            Log.RegMeanRidgeFallback(logger, module, epsilon);
            var ridge = a + (eye(a.shape[0], dtype: ScalarType.Float64, device: a.device) * epsilon);
            return linalg.solve(ridge, b + (average.t() * epsilon)).t();
        }
    }
}
