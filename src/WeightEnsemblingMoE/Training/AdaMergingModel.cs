using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// AdaMerging (Yang et al., ICLR 2024) over every parameter tensor of a CLIP vision model: θ = θ_0 + Σ_t λ_t τ_t with
/// τ_t = θ_t − θ_0, where λ (<c>merge_weight</c>, shape [T] task-wise or [P, T] layer-wise) is the only trainable
/// parameter. The merged weights are rebuilt functionally at every forward pass so that gradients reach λ; after
/// adaptation <see cref="MergeAndUnload"/> returns a plain model.
/// </summary>
public sealed class AdaMergingModel : IAdaptableModel, IDisposable
{
    /// <summary>The checkpoint name of the coefficients, as in FusionBench.</summary>
    public const string MergeWeightName = "merge_weight";

    private readonly FunctionalClip functional;
    private readonly Dictionary<string, Tensor> pretrained;
    private readonly Dictionary<string, Tensor> taskVectors;
    private readonly Dictionary<string, int> rows;
    private readonly Parameter mergeWeight;
    private string? fingerprint;
    private bool disposed;

    private AdaMergingModel(
        FunctionalClip functional,
        Dictionary<string, Tensor> pretrained,
        Dictionary<string, Tensor> taskVectors,
        IReadOnlyList<string> names,
        int taskCount,
        AdaMergingOptions options)
    {
        this.functional = functional;
        this.pretrained = pretrained;
        this.taskVectors = taskVectors;
        ParameterNames = names;
        TaskCount = taskCount;
        Options = options;
        rows = names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        long[] shape = options.Granularity == AdaMergingGranularity.TaskWise ? [taskCount] : [names.Count, taskCount];
        mergeWeight = new Parameter(full(shape, options.InitLambda, ScalarType.Float32), requires_grad: true);
        mergeWeight.DetachFromDisposeScope();
    }

    /// <summary>The merging options.</summary>
    public AdaMergingOptions Options { get; }

    /// <summary>The number of tasks T.</summary>
    public int TaskCount { get; }

    /// <summary>The merged parameter tensors' names, in the row order of layer-wise <see cref="MergeWeight"/>.</summary>
    public IReadOnlyList<string> ParameterNames { get; }

    /// <summary>The coefficients λ: shape [T] (task-wise) or [P, T] (layer-wise), unclamped.</summary>
    public Parameter MergeWeight => mergeWeight;

    /// <inheritdoc/>
    public string Method => Options.Granularity == AdaMergingGranularity.TaskWise ? "AdaMerging (task-wise)" : "AdaMerging (layer-wise)";

    /// <summary>
    /// Builds the model from a pre-trained CLIP vision model and its fine-tuned experts (copied: the inputs are neither
    /// modified nor kept).
    /// </summary>
    /// <param name="pretrained">θ_0.</param>
    /// <param name="experts">θ_1..θ_T, with θ_0's parameter names and shapes.</param>
    /// <param name="options">The merging options, or <see langword="null"/> for the defaults.</param>
    /// <returns>The model; the caller owns it.</returns>
    /// <exception cref="ArgumentException">No experts, or an expert's tensors differ from θ_0's in name, shape or projection; the message names the expert and tensor.</exception>
    public static AdaMergingModel Create(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> experts, AdaMergingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(experts);
        if (experts.Count == 0)
        {
            throw new ArgumentException("AdaMerging needs at least one expert.", nameof(experts));
        }

        ModelPool modelPool;
        try
        {
            modelPool = ModelPool.FromModels(pretrained, experts);
        }
        catch (InvalidDataException e)
        {
            throw new ArgumentException(e.Message, nameof(experts), e);
        }

        return Create(modelPool, options);
    }

    /// <summary>
    /// Builds the model from a model pool: θ_0 and the stacked task vectors [T, …] of every tensor are copied out of the
    /// pool (streamed expert by expert), so the pool's models or files are not needed afterwards.
    /// </summary>
    /// <param name="modelPool">θ_0 and the experts.</param>
    /// <param name="options">The merging options, or <see langword="null"/> for the defaults.</param>
    /// <returns>The model; the caller owns it.</returns>
    /// <exception cref="InvalidDataException">A weight is NaN or Inf; the message names the model and the tensor.</exception>
    public static AdaMergingModel Create(ModelPool modelPool, AdaMergingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(modelPool);
        options ??= new AdaMergingOptions();
        options.Validate();
        var names = modelPool.Keys.ToList();
        var theta0 = modelPool.LoadPretrained(names);
        var vectors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var noGrad = no_grad();
            foreach (var name in names)
            {
                vectors[name] = empty([modelPool.ExpertCount, .. theta0[name].shape], ScalarType.Float32);
            }

            int t = 0;
            foreach (var taskVector in modelPool.TaskVectors(theta0))
            {
                foreach (var name in names)
                {
                    using var slot = vectors[name][t];
                    slot.copy_(taskVector[name]);
                }

                t++;
            }

            var functional = new FunctionalClip(modelPool.Config, modelPool.HasProjection);
            return new AdaMergingModel(functional, theta0, vectors, names, modelPool.ExpertCount, options);
        }
        catch
        {
            foreach (var tensor in theta0.Values.Concat(vectors.Values))
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<KeyValuePair<string, Parameter>> NamedTrainableParameters() =>
        [KeyValuePair.Create(MergeWeightName, mergeWeight)];

    /// <summary>SHA-256 over θ_0, the task vectors and the granularity; computed once.</summary>
    /// <returns>The digest.</returns>
    public string Fingerprint()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        fingerprint ??= WeightFingerprint.Of(
            pretrained.Select(p => KeyValuePair.Create("theta0." + p.Key, p.Value))
                .Concat(taskVectors.Select(p => KeyValuePair.Create("tau." + p.Key, p.Value))),
            "adamerging:" + Options.Granularity);
        return fingerprint;
    }

    /// <summary>Nothing to switch: AdaMerging has no input-dependent routing.</summary>
    /// <param name="training">Ignored.</param>
    public void SetTraining(bool training)
    {
    }

    /// <summary>The merged model's image features, differentiable with respect to <see cref="MergeWeight"/>.</summary>
    /// <param name="pixelValues">Images [B, C, H, W].</param>
    /// <returns>Features [B, D].</returns>
    public Tensor Features(Tensor pixelValues)
    {
        ArgumentNullException.ThrowIfNull(pixelValues);
        ObjectDisposedException.ThrowIf(disposed, this);
        using var scope = NewDisposeScope();
        var lambdas = Options.Clamp ? mergeWeight.clamp(0, 1) : mergeWeight.alias();
        var cache = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        Tensor Weight(string name)
        {
            if (!cache.TryGetValue(name, out var merged))
            {
                merged = Merge(name, lambdas);
                cache[name] = merged;
            }

            return merged;
        }

        return functional.Features(Weight, pixelValues).MoveToOuterDisposeScope();
    }

    /// <summary>The merged weights at the current (clamped, if so configured) coefficients, detached, by state-dict key.</summary>
    /// <returns>New tensors the caller owns.</returns>
    public Dictionary<string, Tensor> MergedWeights()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var lambdas = Options.Clamp ? mergeWeight.clamp(0, 1) : mergeWeight.alias();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var name in ParameterNames)
        {
            var merged = Merge(name, lambdas);
            if (!merged.isfinite().all().item<bool>())
            {
                throw new InvalidOperationException($"Merged tensor '{name}' holds NaN or infinity.");
            }

            result[name] = merged.DetachFromDisposeScope();
        }

        return result;
    }

    /// <summary>Merges at the current coefficients and returns a plain CLIP vision model with no AdaMerging overhead.</summary>
    /// <returns>A new model the caller owns, in evaluation mode.</returns>
    public ClipVisionModel MergeAndUnload()
    {
        var weights = MergedWeights();
        var model = new ClipVisionModel(functional.Config, functional.HasProjection);
        try
        {
            StateDict.LoadInto(model, weights, strict: true);
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
        finally
        {
            foreach (var tensor in weights.Values)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>Disposes the stored weights, task vectors and coefficients.</summary>
    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        foreach (var tensor in pretrained.Values.Concat(taskVectors.Values))
        {
            tensor.Dispose();
        }

        mergeWeight.Dispose();
        functional.Dispose();
    }

    private Tensor Merge(string name, Tensor lambdas)
    {
        var vectors = taskVectors[name];
        var row = Options.Granularity == AdaMergingGranularity.TaskWise ? lambdas : lambdas[rows[name]];
        var shape = new long[vectors.dim()];
        Array.Fill(shape, 1L);
        shape[0] = TaskCount;
        return pretrained[name] + (row.view(shape) * vectors).sum(dim: 0);
    }
}
