using TorchSharp;
using WeightEnsembling.Moe;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Pareto;

/// <summary>
/// The Pareto weight-ensembling module of PWEMoE (Tang et al., arXiv 2406.09770): it wraps a module θ_0 made of named
/// linear layers (a CLIP MLP or attention block), the frozen task vectors τ_t of those layers and a
/// <see cref="PreferenceRouter"/>. For a preference p on the simplex the router gives routing weights r = router(p), and
/// the module runs with the merged weights θ_0 + Σ_t r_t τ_t, the same for every input.
/// </summary>
/// <remarks>
/// <para>The state-dict keys, freezing and ownership are those of <see cref="WeightEnsemblingLayer"/>; the module owns
/// its router.</para>
/// <para>Because the preference is constant over the batch, the merged linear weights are computed once per preference
/// and cached; the cache is dropped when the preference changes, when a router parameter changes (e.g. after an optimizer
/// step) and when gradients are needed but the cache was built without them. A forward pass then costs what the plain
/// module costs. Under autograd the cached weights carry the router's graph: a second <c>backward</c> through them at the
/// same preference and router needs <see cref="ClearCache"/> first (or <c>retain_graph</c>).</para>
/// </remarks>
public sealed class ParetoWeightEnsemblingModule : WeightEnsemblingLayer
{
    // Not Tensor fields: TorchSharp registers Tensor fields as buffers.
    private readonly MergedCache cache = new();
    private double[]? preference;

    /// <summary>Wraps <paramref name="baseModel"/> with its task vectors and a preference router.</summary>
    /// <param name="baseModel">The pretrained module θ_0, an <see cref="IMergeableModule"/>; frozen and owned by this module.</param>
    /// <param name="taskVectors">The task vectors of every linear layer's weight (and bias where it has one), any storage; frozen and owned by this module.</param>
    /// <param name="gate">The preference router, with <see cref="PreferenceRouter.TaskCount"/> equal to the task count; owned by this module.</param>
    /// <exception cref="ArgumentException">The base module is not mergeable, a task vector is missing, extra or of the wrong shape, or the router's width differs from the task count.</exception>
    public ParetoWeightEnsemblingModule(nn.Module baseModel, TaskVectorDictionary taskVectors, PreferenceRouter gate)
        : base(nameof(ParetoWeightEnsemblingModule), baseModel, taskVectors, gate, ownsGate: true, Validate(baseModel, taskVectors, gate))
    {
    }

    /// <summary>The preference router (registered as <c>gate</c>).</summary>
    public PreferenceRouter Gate => (PreferenceRouter)GateModule;

    /// <summary>A copy of the current preference, or <see langword="null"/> when none is set.</summary>
    public IReadOnlyList<double>? Preference => preference?.ToArray();

    /// <summary>Sets the preference the next forward passes use; a different preference drops the cached merged weights.</summary>
    /// <param name="value">The preference: T finite, non-negative entries summing to 1 (within 1e-4).</param>
    /// <exception cref="ArgumentException">The preference has the wrong length, a negative or non-finite entry, or does not sum to 1.</exception>
    public void SetPreference(IReadOnlyList<double> value)
    {
        var checkedValue = Preferences.Check(value, TaskCount, nameof(value));
        if (preference is null || !preference.AsSpan().SequenceEqual(checkedValue))
        {
            cache.Clear();
        }

        preference = checkedValue;
    }

    /// <summary>Removes the preference (a forward pass then throws) and drops the cached merged weights.</summary>
    public void ClearPreference()
    {
        preference = null;
        cache.Clear();
    }

    /// <summary>Drops the cached merged weights; the next forward pass recomputes them.</summary>
    public void ClearCache() => cache.Clear();

    /// <summary>The routing weights r = router(p) for a preference, detached, shape [T], on the router's device.</summary>
    /// <param name="value">The preference.</param>
    /// <returns>A new tensor the caller owns.</returns>
    /// <exception cref="ArgumentException">The preference is invalid.</exception>
    public Tensor RoutingWeights(IReadOnlyList<double> value)
    {
        var p = Preferences.Check(value, TaskCount, nameof(value));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        return Gate.call(PreferenceTensor(p)).detach().MoveToOuterDisposeScope();
    }

    /// <summary>Runs the wrapped module with the weights merged at the current preference.</summary>
    /// <param name="input">The module input, e.g. tokens [B, N, D]; not disposed.</param>
    /// <returns>The wrapped module's output.</returns>
    /// <exception cref="InvalidOperationException">No preference is set.</exception>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var p = preference ?? throw new InvalidOperationException(
            $"No preference is set on this {nameof(ParetoWeightEnsemblingModule)}: call SetPreference (on the module or the whole model) before running it.");
        using var scope = NewDisposeScope();
        var merged = MergedLinearWeights(p);
        var output = RunWith(input, merged);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The merged parameters θ_0 + Σ_t r_t τ_t of the wrapped module at a preference (r = router(p)), for merge-and-unload:
    /// every parameter of <c>base_model</c> by name. The tensors are new, do not require grad and belong to the caller.
    /// </summary>
    /// <param name="value">The preference.</param>
    /// <returns>The merged state dict of the wrapped module.</returns>
    /// <exception cref="ArgumentException">The preference is invalid.</exception>
    /// <exception cref="InvalidOperationException">A merged tensor contains NaN or Inf (the message names it).</exception>
    public Dictionary<string, Tensor> MergedWeights(IReadOnlyList<double> value)
    {
        using var routing = RoutingWeights(value);
        return MergeStateDict(routing);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            cache.Clear();
        }

        base.Dispose(disposing);
    }

    private Tensor PreferenceTensor(double[] p)
    {
        var first = Gate.parameters().First();
        return tensor(p, dtype: first.dtype, device: first.device);
    }

    // The merged linear weights at preference p, from the cache when the router and the grad mode still match it.
    private Dictionary<string, (Tensor Weight, Tensor? Bias)> MergedLinearWeights(double[] p)
    {
        bool withGrad = is_grad_enabled() && Gate.parameters().Any(q => q.requires_grad);
        float[] routerState = RouterState();
        if (cache.Layers is not null && (cache.WithGrad || !withGrad) && cache.RouterState.AsSpan().SequenceEqual(routerState))
        {
            return cache.Layers;
        }

        cache.Clear();
        var routing = Gate.call(PreferenceTensor(p));
        var layers = new Dictionary<string, (Tensor Weight, Tensor? Bias)>(StringComparer.Ordinal);
        foreach (var name in LinearLayerNames)
        {
            var (weight, bias) = MergeLinear(name, routing);
            layers[name] = (weight.DetachFromDisposeScope(), bias?.DetachFromDisposeScope());
        }

        cache.Layers = layers;
        cache.WithGrad = withGrad;
        cache.RouterState = routerState;
        return layers;
    }

    private float[] RouterState()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var flat = cat(Gate.parameters().Select(q => q.detach().flatten().to(ScalarType.Float32, CPU)).ToList(), 0);
        return flat.data<float>().ToArray();
    }

    private static int Validate(nn.Module baseModel, TaskVectorDictionary taskVectors, PreferenceRouter gate)
    {
        ArgumentNullException.ThrowIfNull(gate);
        int hiddenSize = ValidateMergeable(baseModel, taskVectors);
        if (gate.TaskCount != taskVectors.TaskCount)
        {
            throw new ArgumentException($"The preference router is for {gate.TaskCount} tasks; the task vectors hold {taskVectors.TaskCount}.", nameof(gate));
        }

        return hiddenSize;
    }

    private sealed class MergedCache
    {
        public Dictionary<string, (Tensor Weight, Tensor? Bias)>? Layers { get; set; }

        public bool WithGrad { get; set; }

        public float[] RouterState { get; set; } = [];

        public void Clear()
        {
            if (Layers is not null)
            {
                foreach (var (weight, bias) in Layers.Values)
                {
                    weight.Dispose();
                    bias?.Dispose();
                }
            }

            Layers = null;
            RouterState = [];
        }
    }
}
