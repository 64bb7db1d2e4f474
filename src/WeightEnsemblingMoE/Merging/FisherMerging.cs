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
/// Fisher merging (Matena &amp; Raffel, NeurIPS 2022): θ = Σ_t F̂_t ⊙ θ_t / Σ_t F̂_t element-wise, where F_t is the
/// diagonal Fisher information of model t on its own task and F̂_t = c_t (F_t + ε) with ε =
/// <see cref="FisherMergingOptions.MinimalFisher"/> and c_t = 1 / (‖F_t‖ + ε) when
/// <see cref="FisherMergingOptions.NormalizeFisher"/> is on (‖·‖ the L2 norm over all parameters), else 1 — FusionBench's
/// <c>merging_with_fisher_weights</c> with equal scaling coefficients. Where every Fisher is zero the merge is the
/// simple average; so it is when all Fishers are equal.
/// </summary>
/// <remarks>
/// The Fisher estimate is F_t = (1/N) Σ_n (∂ log p(y_n | x_n) / ∂θ)² over N examples, the logits being the task head
/// applied to <see cref="ClipVisionModel.GetImageFeatures"/>, with y_n drawn from the model's prediction or the true label
/// (<see cref="FisherMergingOptions.Labels"/>), per example or per batch (<see cref="FisherMergingOptions.PerExampleGradients"/>).
/// FusionBench instead squares the gradient of Σ_n Σ_c √p_nc log p_nc per batch, which keeps cross terms between
/// examples and classes and is not an estimate of this quantity; we do not reproduce it.
/// </remarks>
public static class FisherMerging
{
    private const string Method = "fisher";

    /// <summary>
    /// The diagonal Fisher information of every parameter of <paramref name="model"/> on the first
    /// <see cref="FisherMergingOptions.ExampleCount"/> examples of <paramref name="dataset"/> (see the class remarks), keyed
    /// by state-dict name. Gradients are enabled on the model's parameters for the computation and their
    /// <c>requires_grad</c> flags restored afterwards; the head's parameters get no gradients.
    /// </summary>
    /// <param name="model">The fine-tuned model.</param>
    /// <param name="head">The task's classification head on the model's image features.</param>
    /// <param name="dataset">The task's examples; labelled when <see cref="FisherMergingOptions.Labels"/> is <see cref="FisherLabels.True"/>.</param>
    /// <param name="options">The options; defaults when null.</param>
    /// <param name="progress">Receives a report after each batch.</param>
    /// <param name="cancellationToken">Checked before each batch.</param>
    /// <returns>New float32 tensors (the shapes of the parameters) owned by the caller.</returns>
    public static Dictionary<string, Tensor> ComputeFisher(
        ClipVisionModel model,
        TaskHead head,
        TaskDataset dataset,
        FisherMergingOptions? options = null,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(head);
        DataAwareMergeSupport.CheckDataset(dataset, "The dataset", nameof(dataset));
        options ??= new FisherMergingOptions();
        options.Validate();
        CheckTask(head, dataset, options, "The dataset", nameof(dataset));
        return Fisher(model, head, dataset, options, progress, 0, 1, cancellationToken);
    }

    /// <summary>
    /// Merges state dicts with precomputed diagonal Fishers. A floating-point tensor with a Fisher is Fisher-weighted;
    /// one without (in every Fisher dictionary) is the simple average; other tensors are copied from the first model.
    /// </summary>
    /// <param name="models">The fine-tuned state dicts, at least one, with equal keys and shapes.</param>
    /// <param name="fishers">Per model, its non-negative Fisher by tensor name; every model has the same names.</param>
    /// <param name="options">The options (<see cref="FisherMergingOptions.NormalizeFisher"/>, <see cref="FisherMergingOptions.MinimalFisher"/>); defaults when null.</param>
    /// <returns>The merged state dict: new tensors in the models' dtypes, owned by the caller.</returns>
    /// <exception cref="ArgumentException">Counts, keys or shapes do not match, or a value is negative, NaN or infinite; the message names it.</exception>
    public static Dictionary<string, Tensor> Merge(
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> models,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> fishers,
        FisherMergingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(fishers);
        options ??= new FisherMergingOptions();
        options.Validate();
        if (models.Count == 0)
        {
            throw new ArgumentException("At least one model is needed.", nameof(models));
        }

        if (fishers.Count != models.Count)
        {
            throw new ArgumentException($"{models.Count} models need {models.Count} Fishers; got {fishers.Count}.", nameof(fishers));
        }

        using var sums = new Sums(options);
        for (int t = 0; t < models.Count; t++)
        {
            sums.Fold(t, models[t] ?? throw new ArgumentException($"Model {t} is null.", nameof(models)),
                fishers[t] ?? throw new ArgumentException($"The Fisher of model {t} is null.", nameof(fishers)));
        }

        return sums.Result();
    }

    /// <summary>
    /// Runs Fisher merging end to end: each model's Fisher on its own task (one task at a time; only the running sums
    /// Σ F̂_t θ_t and Σ F̂_t are kept), then the merge. This is the entry point for a benchmark runner.
    /// </summary>
    /// <param name="finetuned">The fine-tuned models, one per task, of one architecture; their weights are not changed.</param>
    /// <param name="heads">Each task's classification head, in the same order.</param>
    /// <param name="datasets">Each task's examples, in the same order.</param>
    /// <param name="options">The options; defaults when null.</param>
    /// <param name="progress">Receives a report after each batch.</param>
    /// <param name="cancellationToken">Checked before each batch.</param>
    /// <param name="logger">Receives each task's time and the total (information). The default value is <see cref="NullLogger.Instance"/>.</param>
    /// <returns>A new plain model (in eval mode) owned by the caller.</returns>
    public static ClipVisionModel Run(
        IReadOnlyList<ClipVisionModel> finetuned,
        IReadOnlyList<TaskHead> heads,
        IReadOnlyList<TaskDataset> datasets,
        FisherMergingOptions? options = null,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default,
        ILogger? logger = null)
    {
        DataAwareMergeSupport.CheckModelsAndData(finetuned, datasets);
        options = CheckHeads(finetuned.Count, heads, datasets, options);
        return RunCore(finetuned.Count, t => (finetuned[t], false), heads, datasets, options, progress, cancellationToken, logger, merged => DataAwareMergeSupport.Build(finetuned[0], merged));
    }

    /// <summary>
    /// Runs Fisher merging over a model pool: the experts are loaded one at a time (only one is in memory besides the
    /// running sums), each with its own task's head and data; θ_0 is not used.
    /// </summary>
    /// <param name="modelPool">The experts, one per task.</param>
    /// <param name="heads">Each task's classification head, in the pool's order.</param>
    /// <param name="datasets">Each task's examples, in the pool's order.</param>
    /// <param name="options">The options; defaults when null.</param>
    /// <param name="progress">Receives a report after each batch.</param>
    /// <param name="cancellationToken">Checked before each batch.</param>
    /// <param name="logger">Receives each task's time and the total (information). The default value is <see cref="NullLogger.Instance"/>.</param>
    /// <returns>A new plain model (in eval mode) owned by the caller.</returns>
    public static ClipVisionModel Run(
        ModelPool modelPool,
        IReadOnlyList<TaskHead> heads,
        IReadOnlyList<TaskDataset> datasets,
        FisherMergingOptions? options = null,
        IProgress<MergeProgress>? progress = null,
        CancellationToken cancellationToken = default,
        ILogger? logger = null)
    {
        DataAwareMergeSupport.CheckPoolAndData(modelPool, datasets);
        ArgumentNullException.ThrowIfNull(heads);
        options = CheckHeads(modelPool.ExpertCount, heads, datasets, options);
        return RunCore(modelPool.ExpertCount, t => (modelPool.LoadExpertModel(t), true), heads, datasets, options, progress, cancellationToken, logger, modelPool.BuildModel);
    }

    private static ClipVisionModel RunCore(
        int count,
        Func<int, (ClipVisionModel Model, bool Owned)> modelAt,
        IReadOnlyList<TaskHead> heads,
        IReadOnlyList<TaskDataset> datasets,
        FisherMergingOptions options,
        IProgress<MergeProgress>? progress,
        CancellationToken cancellationToken,
        ILogger? logger,
        Func<IReadOnlyDictionary<string, Tensor>, ClipVisionModel> build)
    {
        using var sums = new Sums(options);
        return DataAwareMergeSupport.RunPerTask(
            Method,
            count,
            modelAt,
            datasets,
            (model, t) => Fisher(model, heads[t], datasets[t], options, progress, t, count, cancellationToken),
            sums.Fold,
            sums.Result,
            build,
            logger ?? NullLogger.Instance);
    }

    // One head per model, each fitting its dataset; returns the validated options.
    private static FisherMergingOptions CheckHeads(int count, IReadOnlyList<TaskHead> heads, IReadOnlyList<TaskDataset> datasets, FisherMergingOptions? options)
    {
        ArgumentNullException.ThrowIfNull(heads);
        options ??= new FisherMergingOptions();
        options.Validate();
        if (heads.Count != count)
        {
            throw new ArgumentException($"{count} models need {count} heads; got {heads.Count}.", nameof(heads));
        }

        for (int t = 0; t < heads.Count; t++)
        {
            CheckTask(heads[t] ?? throw new ArgumentException($"Head {t} is null.", nameof(heads)), datasets[t], options, $"Dataset {t}", nameof(datasets));
        }

        return options;
    }

    private static void CheckTask(TaskHead head, TaskDataset dataset, FisherMergingOptions options, string label, string paramName)
    {
        DataAwareMergeSupport.CheckDataset(dataset, label, paramName);
        if (options.Labels == FisherLabels.True && !dataset.HasLabels)
        {
            throw new ArgumentException($"{label} ('{dataset.Name}') has no labels; {nameof(FisherLabels)}.{nameof(FisherLabels.True)} needs them.", paramName);
        }

        if (head.ClassCount != dataset.ClassCount)
        {
            throw new ArgumentException($"{label} ('{dataset.Name}') has {dataset.ClassCount} classes but its head has {head.ClassCount}.", paramName);
        }
    }

    private static Dictionary<string, Tensor> Fisher(
        ClipVisionModel model, TaskHead head, TaskDataset dataset, FisherMergingOptions options, IProgress<MergeProgress>? progress,
        int task, int taskCount, CancellationToken cancellationToken)
    {
        var device = DeviceOf.Module(model);
        DeviceOf.MoveHeads([head], device);
        var parameters = model.named_parameters().ToList();
        var headParameters = head.parameters().ToList();
        var modelFlags = parameters.Select(p => p.parameter.requires_grad).ToArray();
        var headFlags = headParameters.Select(p => p.requires_grad).ToArray();
        var sums = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using var generator = new Generator(unchecked((ulong)options.Seed));
        try
        {
            foreach (var (_, parameter) in parameters)
            {
                parameter.requires_grad = parameter.is_floating_point();
            }

            foreach (var parameter in headParameters)
            {
                parameter.requires_grad = false;
            }

            foreach (var (name, parameter) in parameters)
            {
                sums.Add(name, zeros(parameter.shape, ScalarType.Float32, device: parameter.device).DetachFromDisposeScope());
            }

            long total = DataAwareMergeSupport.ExampleTotal(dataset, options.ExampleCount), done = 0;
            using var enableGrad = enable_grad();
            foreach (var batch in DataAwareMergeSupport.Examples(dataset, options.ExampleCount, options.BatchSize, options.Shuffle, options.Seed))
            {
                using (batch)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    if (options.PerExampleGradients)
                    {
                        for (long n = 0; n < batch.Count; n++)
                        {
                            using var scope = NewDisposeScope();
                            AccumulateSquaredGradient(model, head, parameters, sums, batch.Images.narrow(0, n, 1), batch.Labels?.narrow(0, n, 1), options.Labels, generator);
                        }
                    }
                    else
                    {
                        using var scope = NewDisposeScope();
                        AccumulateSquaredGradient(model, head, parameters, sums, batch.Images, batch.Labels, options.Labels, generator);
                    }

                    done += batch.Count;
                }

                progress?.Report(new MergeProgress(Method, dataset.Name, task, taskCount, done, total));
            }

            foreach (var sum in sums.Values)
            {
                sum.div_(done);
            }

            var result = new Dictionary<string, Tensor>(sums, StringComparer.Ordinal);
            sums.Clear();
            return result;
        }
        finally
        {
            model.zero_grad();
            for (int i = 0; i < parameters.Count; i++)
            {
                parameters[i].parameter.requires_grad = modelFlags[i];
            }

            for (int i = 0; i < headParameters.Count; i++)
            {
                headParameters[i].requires_grad = headFlags[i];
            }

            DataAwareMergeSupport.DisposeAll(sums.Values);
        }
    }

    /// <summary>Adds (∂ Σ_n log p(y_n | x_n) / ∂θ)² over the given examples to <paramref name="sums"/>.</summary>
    private static void AccumulateSquaredGradient(
        ClipVisionModel model, TaskHead head, List<(string name, TorchSharp.Modules.Parameter parameter)> parameters,
        Dictionary<string, Tensor> sums, Tensor images, Tensor? labels, FisherLabels labelSource, Generator generator)
    {
        model.zero_grad();
        var device = DeviceOf.Module(model);
        var logProbabilities = head.forward(model.GetImageFeatures(DeviceOf.On(images, device))).log_softmax(-1);

        // Sampled labels are drawn on the CPU with the CPU generator, so a seed gives the same labels on every device.
        var targets = labelSource == FisherLabels.True
            ? DeviceOf.On(labels!, device).to(ScalarType.Int64)
            : DeviceOf.On(multinomial(logProbabilities.detach().exp().cpu(), 1, generator: generator).view(-1), device);
        var logLikelihood = logProbabilities.gather(1, targets.view(-1, 1)).sum();
        logLikelihood.backward();
        using var noGrad = no_grad();
        foreach (var (name, parameter) in parameters)
        {
            var gradient = parameter.grad;
            if (gradient is not null)
            {
                sums[name].add_(gradient.square());
            }
        }
    }

    /// <summary>The running sums of one merge: Σ_t F̂_t ⊙ θ_t and Σ_t F̂_t per tensor (float64), Σ θ_t for the rest.</summary>
    private sealed class Sums(FisherMergingOptions options) : IDisposable
    {
        private readonly Dictionary<string, Tensor> numerators = new(StringComparer.Ordinal);
        private readonly Dictionary<string, Tensor> denominators = new(StringComparer.Ordinal);
        private readonly Dictionary<string, Tensor> totals = new(StringComparer.Ordinal);
        private readonly Dictionary<string, Tensor> copied = new(StringComparer.Ordinal);
        private readonly Dictionary<string, (ScalarType Type, long[] Shape)> reference = new(StringComparer.Ordinal);
        private HashSet<string>? names;
        private int count;

        public void Fold(int t, IReadOnlyDictionary<string, Tensor> weights, IReadOnlyDictionary<string, Tensor> fisher)
        {
            DataAwareMergeSupport.CheckKeys(reference, t, weights);
            if (names is null)
            {
                names = new HashSet<string>(fisher.Keys, StringComparer.Ordinal);
                var unknown = names.Where(n => !reference.ContainsKey(n) || !weights[n].is_floating_point()).ToArray();
                if (unknown.Length > 0)
                {
                    throw new ArgumentException($"The Fisher of model 0 names tensors that are not floating-point tensors of the model: [{string.Join(", ", unknown)}].", "fishers");
                }
            }
            else if (!names.SetEquals(fisher.Keys))
            {
                throw new ArgumentException(
                    $"The Fisher of model {t} covers other tensors than that of model 0: missing [{string.Join(", ", names.Except(fisher.Keys))}], extra [{string.Join(", ", fisher.Keys.Except(names))}].",
                    "fishers");
            }

            double squaredNorm = 0;
            foreach (var name in names)
            {
                using var scope = NewDisposeScope();
                var value = fisher[name] ?? throw new ArgumentException($"The Fisher of '{name}' of model {t} is null.", "fishers");
                if (!value.shape.SequenceEqual(reference[name].Shape))
                {
                    throw new ArgumentException(
                        $"The Fisher of '{name}' of model {t} has shape {DataAwareMergeSupport.Shape(value)}; the tensor has [{string.Join(", ", reference[name].Shape)}].",
                        "fishers");
                }

                var f = value.to(ScalarType.Float64);
                if (!f.isfinite().all().item<bool>() || f.lt(0).any().item<bool>())
                {
                    throw new ArgumentException($"The Fisher of '{name}' of model {t} has negative, NaN or infinite values.", "fishers");
                }

                squaredNorm += f.square().sum().item<double>();
            }

            double coefficient = options.NormalizeFisher ? 1 / (Math.Sqrt(squaredNorm) + options.MinimalFisher) : 1;
            foreach (var (name, tensor) in weights)
            {
                using var scope = NewDisposeScope();
                if (names.Contains(name))
                {
                    var weight = (fisher[name].to(ScalarType.Float64) + options.MinimalFisher) * coefficient;
                    DataAwareMergeSupport.AddTo(numerators, name, weight * tensor.to(ScalarType.Float64));
                    DataAwareMergeSupport.AddTo(denominators, name, weight);
                }
                else if (tensor.is_floating_point())
                {
                    DataAwareMergeSupport.AddTo(totals, name, tensor.to(ScalarType.Float64));
                }
                else if (t == 0)
                {
                    copied.Add(name, tensor.clone().DetachFromDisposeScope());
                }
            }

            count++;
        }

        public Dictionary<string, Tensor> Result()
        {
            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            try
            {
                foreach (var (name, (type, _)) in reference)
                {
                    using var scope = NewDisposeScope();
                    Tensor merged = copied.TryGetValue(name, out var copy) ? copy.clone()
                        : numerators.TryGetValue(name, out var numerator) ? (numerator / denominators[name]).to(type)
                        : (totals[name] / count).to(type);
                    if (merged.is_floating_point() && !merged.isfinite().all().item<bool>())
                    {
                        throw new ArgumentException($"The merged tensor '{name}' contains NaN or Inf (overflow in its dtype {type}).");
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
            foreach (var map in new[] { numerators, denominators, totals, copied })
            {
                DataAwareMergeSupport.DisposeAll(map.Values);
                map.Clear();
            }
        }
    }
}
