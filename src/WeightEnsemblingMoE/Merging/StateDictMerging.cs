using static TorchSharp.torch;

namespace WeightEnsembling.Merging;

/// <summary>
/// Static (data-free) merges of state dicts: simple averaging, task arithmetic and TIES. Each returns a new dictionary of
/// new tensors and never modifies its inputs. Non-floating-point tensors (e.g. integer position ids) are copied from the
/// first model. Mismatched keys or shapes and NaN/Inf values raise an <see cref="ArgumentException"/> naming the model
/// and the tensor.
/// </summary>
public static class StateDictMerging
{
    /// <summary>θ = (1/M) Σ_m θ_m.</summary>
    /// <param name="models">The models to average, at least one, all with the same keys and shapes.</param>
    public static Dictionary<string, Tensor> SimpleAverage(IReadOnlyList<IReadOnlyDictionary<string, Tensor>> models)
    {
        ArgumentNullException.ThrowIfNull(models);
        if (models.Count == 0)
        {
            throw new ArgumentException("At least one model is needed.", nameof(models));
        }

        CheckModels(models[0], models.Skip(1).ToList(), nameof(models), "model 0", offset: 1);
        return MergeEach(models[0], name =>
        {
            var sum = models[0][name].to(ScalarType.Float64);
            foreach (var model in models.Skip(1))
            {
                sum = sum + model[name];
            }

            return sum / models.Count;
        });
    }

    /// <summary>Task arithmetic: θ = θ_0 + λ Σ_t (θ_t − θ_0).</summary>
    /// <param name="pretrained">The pretrained model θ_0.</param>
    /// <param name="finetuned">The fine-tuned models θ_t, at least one.</param>
    /// <param name="scalingFactor">The scaling factor λ. The default value is 0.3.</param>
    public static Dictionary<string, Tensor> TaskArithmetic(
        IReadOnlyDictionary<string, Tensor> pretrained,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> finetuned,
        double scalingFactor = 0.3)
    {
        CheckPretrainedAndFinetuned(pretrained, finetuned);
        if (!double.IsFinite(scalingFactor))
        {
            throw new ArgumentOutOfRangeException(nameof(scalingFactor), scalingFactor, "The scaling factor must be finite.");
        }

        return MergeEach(pretrained, name =>
        {
            var theta0 = pretrained[name].to(ScalarType.Float64);
            var sum = zeros_like(theta0);
            foreach (var model in finetuned)
            {
                sum = sum + (model[name] - theta0);
            }

            return theta0 + (scalingFactor * sum);
        });
    }

    /// <summary>
    /// TIES merging (Yadav et al., 2023), matching FusionBench's <c>ties_merging</c>: (1) trim: per task, keep the
    /// entries with |τ| ≥ the k-th smallest |τ| over the flattened concatenation of all that task's floating-point
    /// tensors, k = d − ⌊d·TopK⌋ (ties at the threshold are kept); (2) elect: the sign of the per-element sum of the
    /// trimmed vectors, where a zero sum takes the sign of the sum of all elected signs (FusionBench's "majority"
    /// <c>resolve_zero_signs</c>); (3) disjoint merge: sum (or mean over the non-zero entries) of the trimmed entries that
    /// agree with the elected sign; θ = θ_0 + λ·merged. Works tensor by tensor after one pass per task for its threshold.
    /// </summary>
    /// <param name="pretrained">The pretrained model θ_0.</param>
    /// <param name="finetuned">The fine-tuned models θ_t, at least one.</param>
    /// <param name="options">The TIES options; validated.</param>
    public static Dictionary<string, Tensor> Ties(
        IReadOnlyDictionary<string, Tensor> pretrained,
        IReadOnlyList<IReadOnlyDictionary<string, Tensor>> finetuned,
        TiesMergingOptions options)
    {
        CheckPretrainedAndFinetuned(pretrained, finetuned);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var names = pretrained.Keys.Where(n => pretrained[n].is_floating_point()).ToArray();

        // Pass 1: one magnitude threshold per task over its whole flattened task vector.
        var thresholds = new double[finetuned.Count];
        for (int t = 0; t < finetuned.Count; t++)
        {
            using var scope = NewDisposeScope();
            var magnitudes = cat(names.Select(n => (finetuned[t][n] - pretrained[n]).abs().reshape(-1).to(ScalarType.Float64)).ToArray(), 0);
            long d = magnitudes.numel();
            long k = d - (long)(d * options.TopK);
            thresholds[t] = k <= 0 || d == 0 ? double.NegativeInfinity : magnitudes.kthvalue(k, 0).values.item<double>();
        }

        // Pass 2: the majority sign = sign of the sum of all elected signs.
        double electedSignSum = 0;
        foreach (var name in names)
        {
            using var scope = NewDisposeScope();
            electedSignSum += Trimmed(pretrained, finetuned, thresholds, name).sum(0L).sign().sum().to(ScalarType.Float64).item<double>();
        }

        double majority = Math.Sign(electedSignSum);

        // Pass 3: elect, resolve zero signs, disjoint merge.
        return MergeEach(pretrained, name =>
        {
            var theta0 = pretrained[name].to(ScalarType.Float64);
            var trimmed = Trimmed(pretrained, finetuned, thresholds, name);
            var sign = trimmed.sum(0L).sign();
            sign = sign.masked_fill(sign.eq(0), majority);
            var agrees = where(sign.unsqueeze(0).gt(0), trimmed.gt(0), trimmed.lt(0));
            var selected = where(agrees, trimmed, zeros_like(trimmed));
            var merged = selected.sum(0L);
            if (options.DisjointMerge == TiesDisjointMerge.Mean)
            {
                merged = merged / selected.ne(0).sum(0L).clamp_min(1);
            }

            return theta0 + (options.ScalingFactor * merged);
        });
    }

    /// <summary>The trimmed task vectors [T, ...] of one tensor, in float64.</summary>
    private static Tensor Trimmed(
        IReadOnlyDictionary<string, Tensor> pretrained, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> finetuned, double[] thresholds, string name)
    {
        var theta0 = pretrained[name].to(ScalarType.Float64);
        return stack(finetuned.Select((model, t) =>
        {
            var tau = model[name].to(ScalarType.Float64) - theta0;
            return where(tau.abs().ge(thresholds[t]), tau, zeros_like(tau));
        }).ToArray());
    }

    /// <summary>Runs <paramref name="merge"/> (in float64) per floating-point tensor and converts back to the reference dtype.</summary>
    private static Dictionary<string, Tensor> MergeEach(IReadOnlyDictionary<string, Tensor> reference, Func<string, Tensor> merge)
    {
        var result = new Dictionary<string, Tensor>(reference.Count, StringComparer.Ordinal);
        try
        {
            foreach (var (name, tensor) in reference)
            {
                using var scope = NewDisposeScope();
                var merged = tensor.is_floating_point() ? merge(name).to(tensor.dtype) : tensor.clone();
                if (tensor.is_floating_point() && !merged.isfinite().all().item<bool>())
                {
                    throw new ArgumentException($"The merged tensor '{name}' contains NaN or Inf (overflow in its dtype {tensor.dtype}).");
                }

                result.Add(name, merged.detach().MoveToOuterDisposeScope());
            }
        }
        catch
        {
            foreach (var tensor in result.Values)
            {
                tensor.Dispose();
            }

            throw;
        }

        return result;
    }

    private static void CheckPretrainedAndFinetuned(
        IReadOnlyDictionary<string, Tensor> pretrained, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> finetuned)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(finetuned);
        if (finetuned.Count == 0)
        {
            throw new ArgumentException("At least one fine-tuned model is needed.", nameof(finetuned));
        }

        CheckModels(pretrained, [], nameof(pretrained), "the pretrained model", offset: 0);
        CheckModels(pretrained, finetuned, nameof(finetuned), "the pretrained model", offset: 0);
    }

    /// <summary>Checks that every model has the keys and shapes of <paramref name="reference"/> and finite values.</summary>
    private static void CheckModels(
        IReadOnlyDictionary<string, Tensor> reference, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> models, string paramName, string referenceName, int offset)
    {
        ArgumentNullException.ThrowIfNull(reference, paramName);
        CheckFinite(reference, referenceName, paramName);
        for (int m = 0; m < models.Count; m++)
        {
            string label = $"{(paramName == "models" ? "model" : "fine-tuned model")} {m + offset}";
            var model = models[m] ?? throw new ArgumentException($"The {label} is null.", paramName);
            var missing = reference.Keys.Where(k => !model.ContainsKey(k)).ToArray();
            var extra = model.Keys.Where(k => !reference.ContainsKey(k)).ToArray();
            if (missing.Length > 0 || extra.Length > 0)
            {
                throw new ArgumentException(
                    $"The {label} does not match {referenceName}: missing [{string.Join(", ", missing)}], extra [{string.Join(", ", extra)}].", paramName);
            }

            foreach (var (name, expected) in reference)
            {
                var actual = model[name] ?? throw new ArgumentException($"Tensor '{name}' of the {label} is null.", paramName);
                if (!actual.shape.SequenceEqual(expected.shape))
                {
                    throw new ArgumentException(
                        $"Tensor '{name}' of the {label} has shape [{string.Join(", ", actual.shape)}]; {referenceName} has [{string.Join(", ", expected.shape)}].",
                        paramName);
                }
            }

            CheckFinite(model, label, paramName);
        }
    }

    private static void CheckFinite(IReadOnlyDictionary<string, Tensor> model, string label, string paramName)
    {
        foreach (var (name, tensor) in model)
        {
            if (tensor is null)
            {
                throw new ArgumentException($"Tensor '{name}' of {label} is null.", paramName);
            }

            if (tensor.is_floating_point() && !tensor.isfinite().all().item<bool>())
            {
                throw new ArgumentException($"Tensor '{name}' of {label} contains NaN or Inf.", paramName);
            }
        }
    }
}
