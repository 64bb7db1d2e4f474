using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Moe;

/// <summary>
/// The weight-ensembling layer both model families share: one module θ_0 made of named linear layers (a CLIP MLP or
/// attention block), the frozen task vectors τ_t of those layers and a trainable router (<c>gate</c>), run with the
/// weights θ_0 + Σ_t r_t τ_t. The families differ only in what the router reads: the layer's input tokens
/// (<see cref="WeightEnsemblingMoE"/>: WEMoE, E-WEMoE, low-rank and sparse variants) or a preference vector over the tasks
/// (<see cref="Pareto.ParetoWeightEnsemblingModule"/>: PWEMoE).
/// </summary>
/// <remarks>
/// <para>State-dict keys follow FusionBench: <c>gate.*</c> (the router), <c>base_model.*</c> (θ_0, frozen) and
/// <c>task_vectors.*</c> (frozen), in that order. After construction only the router's parameters require grad.</para>
/// <para>Ownership: the layer owns <c>base_model</c> and <c>task_vectors</c> and disposes them with itself; it owns the
/// router unless it was built around a shared one (<see cref="OwnsGate"/> is then <see langword="false"/>, and the layer
/// detaches the router before disposing itself).</para>
/// </remarks>
public abstract class WeightEnsemblingLayer : nn.Module<Tensor, Tensor>
{
    // Registered explicitly, in FusionBench's order; not found by RegisterComponents (private fields of a base class).
    private readonly nn.Module<Tensor, Tensor> gate;
    private readonly nn.Module base_model;
    private readonly TaskVectorDictionary task_vectors;
    private readonly string[] linearLayerNames;
    private readonly bool ownsGate;

    /// <summary>Takes ownership of the parts, which the derived constructor has already checked, freezes θ_0 and τ and registers the three submodules.</summary>
    /// <param name="name">The module name.</param>
    /// <param name="baseModel">θ_0, an <see cref="IMergeableModule"/> whose linear layers match <paramref name="taskVectors"/>.</param>
    /// <param name="taskVectors">The task vectors of those layers.</param>
    /// <param name="gate">The router.</param>
    /// <param name="ownsGate">Whether this layer disposes the router.</param>
    /// <param name="hiddenSize">The input width of the first linear layer, as <see cref="ValidateMergeable"/> returned it.</param>
    private protected WeightEnsemblingLayer(
        string name,
        nn.Module baseModel,
        TaskVectorDictionary taskVectors,
        nn.Module<Tensor, Tensor> gate,
        bool ownsGate,
        int hiddenSize)
        : base(name)
    {
        this.gate = gate;
        base_model = baseModel;
        task_vectors = taskVectors;
        this.ownsGate = ownsGate;
        linearLayerNames = [.. ((IMergeableModule)baseModel).LinearLayerNames];
        HiddenSize = hiddenSize;
        foreach (var parameter in baseModel.parameters())
        {
            parameter.requires_grad = false;
        }

        foreach (var parameter in taskVectors.parameters())
        {
            parameter.requires_grad = false;
        }

        register_module(nameof(gate), gate);
        register_module(nameof(base_model), baseModel);
        register_module(nameof(task_vectors), taskVectors);
    }

    /// <summary>The number of tasks T.</summary>
    public int TaskCount => task_vectors.TaskCount;

    /// <summary>The hidden size D of the tokens the layer reads (the input width of its first linear layer).</summary>
    public int HiddenSize { get; }

    /// <summary>Whether this layer disposes its router (<see langword="false"/> for a router shared by several layers).</summary>
    public bool OwnsGate => ownsGate;

    /// <summary>The wrapped pre-trained module θ_0 (registered as <c>base_model</c>).</summary>
    public nn.Module BaseModel => base_model;

    /// <summary>The task vectors (registered as <c>task_vectors</c>).</summary>
    public TaskVectorDictionary TaskVectors => task_vectors;

    /// <summary>The router as a module (registered as <c>gate</c>); the derived types expose it with its own type.</summary>
    internal nn.Module<Tensor, Tensor> GateModule => gate;

    /// <summary>
    /// The merged parameters θ_0 + Σ_t r_t τ_t of the wrapped module for one routing vector (for merge-and-unload): every
    /// parameter of <c>base_model</c> by its name, with the task vectors added where the dictionary has them. The
    /// tensors are new, do not require grad and belong to the caller.
    /// </summary>
    /// <param name="routing">The routing weights r, shape [T], finite.</param>
    /// <returns>The merged state dict of the wrapped module.</returns>
    /// <exception cref="ArgumentException">The routing vector has the wrong shape or is not finite.</exception>
    /// <exception cref="InvalidOperationException">A merged tensor contains NaN or Inf (the message names it).</exception>
    public Dictionary<string, Tensor> MergedWeights(Tensor routing)
    {
        ArgumentNullException.ThrowIfNull(routing);
        if (routing.dim() != 1 || routing.shape[0] != TaskCount)
        {
            throw new ArgumentException(
                $"The routing vector must have shape [{TaskCount}], got [{string.Join(", ", routing.shape)}].", nameof(routing));
        }

        using (torch.no_grad())
        using (torch.NewDisposeScope())
        {
            if (!routing.isfinite().all().item<bool>())
            {
                throw new ArgumentException("The routing vector contains NaN or Inf.", nameof(routing));
            }
        }

        return MergeStateDict(routing);
    }

    /// <summary>
    /// The distinct parameters that require grad over <paramref name="modules"/>, each once even when a router is shared
    /// by several modules (an optimizer must see every parameter once).
    /// </summary>
    /// <param name="modules">The modules, e.g. every layer of an upscaled model.</param>
    /// <returns>The trainable parameters in first-seen order.</returns>
    public static IReadOnlyList<Parameter> DistinctTrainableParameters(IEnumerable<nn.Module> modules)
    {
        ArgumentNullException.ThrowIfNull(modules);
        var seen = new HashSet<IntPtr>();
        var result = new List<Parameter>();
        foreach (var module in modules)
        {
            ArgumentNullException.ThrowIfNull(module, nameof(modules));
            foreach (var parameter in module.parameters())
            {
                if (parameter.requires_grad && seen.Add(parameter.Handle))
                {
                    result.Add(parameter);
                }
            }
        }

        return result;
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing && !ownsGate)
        {
            // Detach the shared router so that the base class does not dispose it with the other submodules.
            register_module(nameof(gate), null!);
        }

        base.Dispose(disposing);
    }

    /// <summary>
    /// θ_0 + Σ_t r_t τ_t of every parameter of <c>base_model</c> for one routing vector r [T], with no grad, checked finite;
    /// new tensors the caller owns (merge-and-unload).
    /// </summary>
    private protected Dictionary<string, Tensor> MergeStateDict(Tensor routing)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var merged = task_vectors.Merge(base_model, routing);
        foreach (var value in merged.Values)
        {
            value.MoveToOuterDisposeScope();
        }

        return merged;
    }

    /// <summary>θ_0 + Σ_t r_t τ_t of one linear layer for one routing vector r [T], differentiable in r.</summary>
    private protected (Tensor Weight, Tensor? Bias) MergeLinear(string name, Tensor routing)
    {
        var (weight, bias) = BaseLinear(name);
        var mergedWeight = task_vectors[name + ".weight"].WeightedSum(routing.to(weight.dtype, weight.device)).add_(weight);
        var mergedBias = bias is null ? null : task_vectors[name + ".bias"].WeightedSum(routing.to(bias.dtype, bias.device)).add_(bias);
        return (mergedWeight, mergedBias);
    }

    /// <summary>The linear layers computed per sample: sample b runs with θ_0 + Σ_t r[b, t] τ_t (routing [B, T]).</summary>
    private protected LinearLayerFunction PerSampleLinear(Tensor routing) => (name, hidden) =>
    {
        var (weight, bias) = BaseLinear(name);
        var output = task_vectors[name + ".weight"].BatchedLinear(hidden, routing, weight, bias);
        if (bias is not null)
        {
            output = output + task_vectors[name + ".bias"].BatchedWeightedSum(routing).unsqueeze(1);
        }

        return output;
    };

    /// <summary>Runs θ_0's forward pass with every linear layer computed by <paramref name="linear"/>.</summary>
    private protected Tensor RunWith(Tensor input, LinearLayerFunction linear) => ((IMergeableModule)base_model).Forward(input, linear);

    /// <summary>Runs θ_0's forward pass with the given merged weights per linear layer.</summary>
    private protected Tensor RunWith(Tensor input, IReadOnlyDictionary<string, (Tensor Weight, Tensor? Bias)> merged) =>
        RunWith(input, (name, hidden) =>
        {
            if (!merged.TryGetValue(name, out var layer))
            {
                throw new ArgumentException($"'{name}' is not one of the linear layers {string.Join(", ", linearLayerNames)}.", nameof(name));
            }

            return nn.functional.linear(hidden, layer.Weight, layer.Bias);
        });

    /// <summary>The names of θ_0's linear layers.</summary>
    private protected IReadOnlyList<string> LinearLayerNames => linearLayerNames;

    /// <summary>
    /// Checks that <paramref name="baseModel"/> is an <see cref="IMergeableModule"/> whose linear layers have exactly the
    /// task vectors <paramref name="taskVectors"/> holds; returns the input width of its first linear layer.
    /// </summary>
    internal static int ValidateMergeable(nn.Module baseModel, TaskVectorDictionary taskVectors)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(taskVectors);
        if (baseModel is not IMergeableModule mergeable)
        {
            throw new ArgumentException($"The base model ({baseModel.GetType().Name}) does not implement {nameof(IMergeableModule)}.", nameof(baseModel));
        }

        var layers = mergeable.LinearLayerNames;
        if (layers is null || layers.Count == 0)
        {
            throw new ArgumentException("The base model names no linear layers.", nameof(baseModel));
        }

        var parameters = baseModel.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var expected = new HashSet<string>(StringComparer.Ordinal);
        int hiddenSize = -1;
        foreach (var layer in layers)
        {
            var weightName = layer + ".weight";
            if (!parameters.TryGetValue(weightName, out var weight) || weight.dim() != 2)
            {
                throw new ArgumentException($"The base model has no 2-D parameter '{weightName}' for linear layer '{layer}'.", nameof(baseModel));
            }

            if (hiddenSize < 0)
            {
                hiddenSize = (int)weight.shape[1];
            }

            CheckTaskVector(taskVectors, weightName, weight);
            expected.Add(weightName);
            if (parameters.TryGetValue(layer + ".bias", out var bias))
            {
                CheckTaskVector(taskVectors, layer + ".bias", bias);
                expected.Add(layer + ".bias");
            }
        }

        foreach (var name in taskVectors.ParameterNames)
        {
            if (!expected.Contains(name))
            {
                throw new ArgumentException(
                    $"The task vectors hold '{name}', which is not a weight or bias of the linear layers {string.Join(", ", layers)}.", nameof(taskVectors));
            }
        }

        return hiddenSize;
    }

    private (Tensor Weight, Tensor? Bias) BaseLinear(string name)
    {
        if (Array.IndexOf(linearLayerNames, name) < 0)
        {
            throw new ArgumentException($"'{name}' is not one of the linear layers {string.Join(", ", linearLayerNames)}.", nameof(name));
        }

        return (base_model.get_parameter(name + ".weight")!, base_model.get_parameter(name + ".bias"));
    }

    private static void CheckTaskVector(TaskVectorDictionary taskVectors, string name, Tensor parameter)
    {
        if (!taskVectors.Contains(name))
        {
            throw new ArgumentException($"The task vectors have no entry for '{name}'.", nameof(taskVectors));
        }

        var shape = taskVectors[name].Shape;
        if (!shape.SequenceEqual(parameter.shape))
        {
            throw new ArgumentException(
                $"The task vectors of '{name}' have shape [{string.Join(", ", shape)}]; the base parameter has [{string.Join(", ", parameter.shape)}].",
                nameof(taskVectors));
        }
    }
}
