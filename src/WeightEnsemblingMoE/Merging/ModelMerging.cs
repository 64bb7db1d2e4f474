using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Merging;

/// <summary>
/// The static merging baselines on CLIP vision models: each takes models, merges their state dicts with
/// <see cref="StateDictMerging"/> and returns a new plain <see cref="ClipVisionModel"/>. Inputs are not modified.
/// </summary>
public static class ModelMerging
{
    /// <summary>Simple averaging: θ = (1/T) Σ_t θ_t.</summary>
    /// <param name="models">The fine-tuned models (same architecture).</param>
    /// <returns>A new plain model the caller owns.</returns>
    public static ClipVisionModel SimpleAverage(IReadOnlyList<ClipVisionModel> models)
    {
        ArgumentNullException.ThrowIfNull(models);
        if (models.Count == 0)
        {
            throw new ArgumentException("At least one model is needed.", nameof(models));
        }

        return Build(models[0], () => StateDictMerging.SimpleAverage(StateDicts(models)));
    }

    /// <summary>Task arithmetic: θ = θ_0 + λ Σ_t (θ_t − θ_0).</summary>
    /// <param name="pretrained">The pre-trained model θ_0.</param>
    /// <param name="finetuned">The fine-tuned models θ_t.</param>
    /// <param name="scalingFactor">λ. The default value is 0.3.</param>
    /// <returns>A new plain model the caller owns.</returns>
    public static ClipVisionModel TaskArithmetic(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> finetuned, double scalingFactor = 0.3)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(finetuned);
        return TaskArithmetic(ModelPool.FromModels(pretrained, finetuned), scalingFactor);
    }

    /// <summary>
    /// Task arithmetic over a model pool, θ = θ_0 + λ Σ_t τ_t, streamed expert by expert (θ_0, the float64 running sum and
    /// one expert in memory).
    /// </summary>
    /// <param name="modelPool">θ_0 and the experts.</param>
    /// <param name="scalingFactor">λ. The default value is 0.3.</param>
    /// <returns>A new plain model the caller owns.</returns>
    public static ClipVisionModel TaskArithmetic(ModelPool modelPool, double scalingFactor = 0.3)
    {
        ArgumentNullException.ThrowIfNull(modelPool);
        return Build(modelPool, () => modelPool.TaskArithmetic(scalingFactor));
    }

    /// <summary>TIES-merging (Yadav et al., 2023): trim, elect sign, disjoint merge; θ = θ_0 + λ·merged.</summary>
    /// <param name="pretrained">The pre-trained model θ_0.</param>
    /// <param name="finetuned">The fine-tuned models θ_t.</param>
    /// <param name="options">The TIES options; <see langword="null"/> for the defaults.</param>
    /// <returns>A new plain model the caller owns.</returns>
    public static ClipVisionModel Ties(ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> finetuned, TiesMergingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(finetuned);
        return Build(pretrained, () => StateDictMerging.Ties(pretrained.state_dict(), StateDicts(finetuned), options ?? new TiesMergingOptions()));
    }

    /// <summary>
    /// TIES-merging over a model pool. TIES trims each task vector by a threshold over all its tensors at once, so θ_0 and
    /// every expert's weights are held in memory for the merge (T + 1 models).
    /// </summary>
    /// <param name="modelPool">θ_0 and the experts.</param>
    /// <param name="options">The TIES options; <see langword="null"/> for the defaults.</param>
    /// <returns>A new plain model the caller owns.</returns>
    public static ClipVisionModel Ties(ModelPool modelPool, TiesMergingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(modelPool);
        return Build(modelPool, () =>
        {
            var theta0 = modelPool.LoadPretrained();
            var experts = new List<Dictionary<string, Tensor>>();
            try
            {
                foreach (var expert in modelPool.ExpertWeights())
                {
                    experts.Add(expert.ToDictionary(e => e.Key, e => e.Value.clone(), StringComparer.Ordinal));
                }

                return StateDictMerging.Ties(theta0, experts, options ?? new TiesMergingOptions());
            }
            finally
            {
                foreach (var tensor in theta0.Values.Concat(experts.SelectMany(e => e.Values)))
                {
                    tensor.Dispose();
                }
            }
        });
    }

    /// <summary>Simple averaging over a model pool's experts, θ = (1/T) Σ_t θ_t, streamed expert by expert; θ_0 is not used.</summary>
    /// <param name="modelPool">The experts.</param>
    /// <returns>A new plain model the caller owns.</returns>
    public static ClipVisionModel SimpleAverage(ModelPool modelPool)
    {
        ArgumentNullException.ThrowIfNull(modelPool);
        return Build(modelPool, () =>
        {
            using var noGrad = no_grad();
            var sums = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var expert in modelPool.ExpertWeights())
            {
                foreach (var (key, tensor) in expert)
                {
                    if (sums.TryGetValue(key, out var sum))
                    {
                        sum.add_(tensor.to(ScalarType.Float64));
                    }
                    else
                    {
                        sums[key] = tensor.to(ScalarType.Float64, copy: true);
                    }
                }
            }

            foreach (var sum in sums.Values)
            {
                sum.div_(modelPool.ExpertCount);
            }

            return sums;
        });
    }

    /// <summary>A new plain model with the architecture of <paramref name="template"/> holding <paramref name="weights"/>.</summary>
    /// <param name="template">The model whose configuration (and projection) the result takes.</param>
    /// <param name="weights">Every state-dict tensor of the model; checked strictly.</param>
    /// <returns>A new plain model the caller owns.</returns>
    public static ClipVisionModel WithWeights(ClipVisionModel template, IReadOnlyDictionary<string, Tensor> weights)
    {
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(weights);
        return ClipVisionModel.FromStateDict(template.Config, template.HasProjection, weights);
    }

    private static IReadOnlyList<IReadOnlyDictionary<string, Tensor>> StateDicts(IReadOnlyList<ClipVisionModel> models)
    {
        for (int i = 0; i < models.Count; i++)
        {
            if (models[i] is null)
            {
                throw new ArgumentException($"Model {i} is null.", nameof(models));
            }
        }

        return models.Select(m => (IReadOnlyDictionary<string, Tensor>)m.state_dict()).ToList();
    }

    private static ClipVisionModel Build(ModelPool modelPool, Func<Dictionary<string, Tensor>> merge)
    {
        var weights = merge();
        try
        {
            return modelPool.BuildModel(weights);
        }
        finally
        {
            foreach (var tensor in weights.Values)
            {
                tensor.Dispose();
            }
        }
    }

    private static ClipVisionModel Build(ClipVisionModel template, Func<Dictionary<string, Tensor>> merge)
    {
        var weights = merge();
        try
        {
            return WithWeights(template, weights);
        }
        finally
        {
            foreach (var tensor in weights.Values)
            {
                tensor.Dispose();
            }
        }
    }
}
