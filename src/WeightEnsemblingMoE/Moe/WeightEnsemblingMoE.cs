using System.Runtime.CompilerServices;
using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.TaskVectors;
using static TorchSharp.torch;

namespace WeightEnsembling.Moe;

/// <summary>
/// A weight-ensembling mixture-of-experts module (WEMoE, Tang et al. ICML 2024): it wraps one module θ_0 made of named
/// linear layers (a CLIP MLP), the task vectors τ_t of those layers and a trainable router. For input tokens x of shape
/// [B, N, D] the router's outputs are averaged over all tokens (class token included, no softmax) into routing weights
/// r ∈ R^{B×T}, and the wrapped module runs with weights θ_0 + Σ_t r_t τ_t.
/// </summary>
/// <remarks>
/// <para>State-dict keys follow FusionBench: <c>gate.*</c> (the router), <c>base_model.*</c> (θ_0, frozen) and
/// <c>task_vectors.*</c> (frozen). After construction only the router's parameters require grad.</para>
/// <para>Ownership: the module owns <c>base_model</c> and <c>task_vectors</c> and disposes them with itself. It owns the
/// router only when it was built with <c>ownsGate: true</c> (the default). A router shared by several modules
/// (E-WEMoE) must be passed with <c>ownsGate: false</c> to every one of them; they then detach it before disposing
/// themselves, and whoever created it disposes it exactly once, after the last module that uses it.</para>
/// </remarks>
public sealed class WeightEnsemblingMoE : nn.Module<Tensor, Tensor>
{
    // Field order sets the state-dict order: gate, base_model, task_vectors (as FusionBench).
    private readonly nn.Module<Tensor, Tensor> gate;
    private readonly nn.Module base_model;
    private readonly TaskVectorDictionary task_vectors;

    // Not a Tensor field: TorchSharp registers Tensor fields as buffers (at RegisterComponents and on to(device)).
    private readonly StrongBox<Tensor?> lastRoutingWeights = new();
    private readonly string[] linearLayerNames;
    private readonly bool ownsGate;

    /// <summary>Wraps <paramref name="baseModel"/> with its task vectors and a router.</summary>
    /// <param name="baseModel">The pretrained module θ_0; it must implement <see cref="IMergeableModule"/>. Its parameters are frozen and it becomes owned by this module.</param>
    /// <param name="taskVectors">The task vectors of the module's linear layers (at least <c>&lt;layer&gt;.weight</c>, and <c>&lt;layer&gt;.bias</c> where the layer has a bias, for every name in <see cref="IMergeableModule.LinearLayerNames"/>); frozen and owned by this module.</param>
    /// <param name="gate">The router: maps [B, N, D] (or [B, N, D + 8] with <paramref name="layerIndex"/>) to [B, N, T]; a <see cref="Router"/> or any module with that contract.</param>
    /// <param name="ownsGate">Whether this module disposes <paramref name="gate"/>. The default value is <see langword="true"/>; pass <see langword="false"/> for a shared router.</param>
    /// <param name="layerIndex">For a shared router: the layer index whose position encoding (<see cref="Router.LayerPositionEncoding"/>) is concatenated in front of the router input. The default value is <see langword="null"/> (no encoding).</param>
    /// <param name="routingMode">The initial <see cref="RoutingMode"/>. The default value is <see cref="RoutingMode.PerSample"/>.</param>
    /// <exception cref="ArgumentException">The base module is not mergeable, a task vector is missing, extra or of the wrong shape, or the router's widths do not match (the message names the tensor or the width).</exception>
    public WeightEnsemblingMoE(
        nn.Module baseModel,
        TaskVectorDictionary taskVectors,
        nn.Module<Tensor, Tensor> gate,
        bool ownsGate = true,
        int? layerIndex = null,
        RoutingMode routingMode = RoutingMode.PerSample)
        : base(Validate(baseModel, taskVectors, gate, layerIndex, out var hiddenSize))
    {
        this.gate = gate;
        base_model = baseModel;
        task_vectors = taskVectors;
        this.ownsGate = ownsGate;
        linearLayerNames = [.. ((IMergeableModule)baseModel).LinearLayerNames];
        HiddenSize = hiddenSize;
        LayerIndex = layerIndex;
        RoutingMode = routingMode;
        foreach (var parameter in baseModel.parameters())
        {
            parameter.requires_grad = false;
        }

        foreach (var parameter in taskVectors.parameters())
        {
            parameter.requires_grad = false;
        }

        RegisterComponents();
    }

    /// <summary>The number of tasks T.</summary>
    public int TaskCount => task_vectors.TaskCount;

    /// <summary>The hidden size D of the tokens the module reads (the input width of its first linear layer).</summary>
    public int HiddenSize { get; }

    /// <summary>The layer index whose position encoding is fed to the router, or <see langword="null"/> for none.</summary>
    public int? LayerIndex { get; }

    /// <summary>How the routing weights of a batch are applied. The default value is <see cref="RoutingMode.PerSample"/>.</summary>
    public RoutingMode RoutingMode { get; set; }

    /// <summary>Whether this module disposes its router.</summary>
    public bool OwnsGate => ownsGate;

    /// <summary>The router (registered as <c>gate</c>).</summary>
    public nn.Module<Tensor, Tensor> Gate => gate;

    /// <summary>The wrapped pretrained module θ_0 (registered as <c>base_model</c>).</summary>
    public nn.Module BaseModel => base_model;

    /// <summary>The task vectors (registered as <c>task_vectors</c>).</summary>
    public TaskVectorDictionary TaskVectors => task_vectors;

    /// <summary>
    /// The routing weights r of the last forward pass, shape [B, T] (per sample, before any batch reduction): a detached
    /// copy owned by this module, disposed when the next forward pass replaces it; <see langword="null"/> before the first.
    /// </summary>
    public Tensor? LastRoutingWeights => lastRoutingWeights.Value;

    /// <summary>Runs the wrapped module with routed weights.</summary>
    /// <param name="input">The tokens, shape [B, N, D]; not disposed.</param>
    /// <returns>The output of the wrapped module, shape [B, N, D'].</returns>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.dim() != 3 || input.shape[2] != HiddenSize)
        {
            throw new ArgumentException(
                $"The input of {nameof(WeightEnsemblingMoE)} must have shape [B, N, {HiddenSize}], got [{string.Join(", ", input.shape)}].",
                nameof(input));
        }

        using var scope = torch.NewDisposeScope();
        var routing = Route(input);
        var previous = lastRoutingWeights.Value;
        lastRoutingWeights.Value = routing.detach().clone().DetachFromDisposeScope();
        previous?.Dispose();

        LinearLayerFunction linear = RoutingMode == RoutingMode.PerSample
            ? PerSampleLinear(routing)
            : MergedLinear(routing.mean([0L]));
        var output = ((IMergeableModule)base_model).Forward(input, linear);
        return output.MoveToOuterDisposeScope();
    }

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

        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        if (!routing.isfinite().all().item<bool>())
        {
            throw new ArgumentException("The routing vector contains NaN or Inf.", nameof(routing));
        }

        var merged = task_vectors.Merge(base_model, routing);
        foreach (var value in merged.Values)
        {
            value.MoveToOuterDisposeScope();
        }

        return merged;
    }

    /// <summary>
    /// The distinct parameters that require grad over <paramref name="modules"/>, each once even when a router is shared
    /// by several modules (an optimizer must see every parameter once).
    /// </summary>
    /// <param name="modules">The modules, e.g. every <see cref="WeightEnsemblingMoE"/> of an upscaled model.</param>
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
        if (disposing)
        {
            if (!ownsGate)
            {
                // Detach the shared router so that the base class does not dispose it with the other submodules.
                register_module(nameof(gate), null!);
            }

            lastRoutingWeights.Value?.Dispose();
            lastRoutingWeights.Value = null;
        }

        base.Dispose(disposing);
    }

    private Tensor Route(Tensor input)
    {
        var gateInput = input;
        if (LayerIndex is int layer)
        {
            using var encoding = Router.LayerPositionEncoding(layer, device: input.device);
            var expanded = encoding.to(input.dtype).expand(input.shape[0], input.shape[1], Router.PositionEncodingDimension);
            gateInput = torch.cat([expanded, input], 2);
        }

        var perToken = gate.call(gateInput);
        if (perToken.dim() != 3 || perToken.shape[0] != input.shape[0] || perToken.shape[1] != input.shape[1] || perToken.shape[2] != TaskCount)
        {
            throw new InvalidOperationException(
                $"The router must return shape [{input.shape[0]}, {input.shape[1]}, {TaskCount}], got [{string.Join(", ", perToken.shape)}].");
        }

        return perToken.mean([1L]);
    }

    private LinearLayerFunction PerSampleLinear(Tensor routing) => (name, hidden) =>
    {
        var (weight, bias) = BaseLinear(name);
        var output = task_vectors[name + ".weight"].BatchedLinear(hidden, routing, weight, bias);
        if (bias is not null)
        {
            output = output + task_vectors[name + ".bias"].BatchedWeightedSum(routing).unsqueeze(1);
        }

        return output;
    };

    private LinearLayerFunction MergedLinear(Tensor routing)
    {
        var cache = new Dictionary<string, (Tensor Weight, Tensor? Bias)>(StringComparer.Ordinal);
        return (name, hidden) =>
        {
            if (!cache.TryGetValue(name, out var merged))
            {
                var (weight, bias) = BaseLinear(name);
                merged = (
                    task_vectors[name + ".weight"].WeightedSum(routing).add_(weight),
                    bias is null ? null : task_vectors[name + ".bias"].WeightedSum(routing).add_(bias));
                cache[name] = merged;
            }

            return nn.functional.linear(hidden, merged.Weight, merged.Bias);
        };
    }

    private (Tensor Weight, Tensor? Bias) BaseLinear(string name)
    {
        if (Array.IndexOf(linearLayerNames, name) < 0)
        {
            throw new ArgumentException($"'{name}' is not one of the linear layers {string.Join(", ", linearLayerNames)}.", nameof(name));
        }

        return (base_model.get_parameter(name + ".weight")!, base_model.get_parameter(name + ".bias"));
    }

    private static string Validate(nn.Module baseModel, TaskVectorDictionary taskVectors, nn.Module<Tensor, Tensor> gate, int? layerIndex, out int hiddenSize)
    {
        ArgumentNullException.ThrowIfNull(gate);
        if (layerIndex is int index)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index, nameof(layerIndex));
        }

        hiddenSize = ValidateMergeable(baseModel, taskVectors);
        int routerInput = hiddenSize + (layerIndex is null ? 0 : Router.PositionEncodingDimension);
        CheckGate(gate, routerInput, taskVectors.TaskCount);
        return nameof(WeightEnsemblingMoE);
    }

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

    private static void CheckGate(nn.Module<Tensor, Tensor> gate, int inputDimension, int taskCount)
    {
        if (gate is IRouter router)
        {
            if (router.TaskCount != taskCount)
            {
                throw new ArgumentException($"The router outputs {router.TaskCount} routing weights; the task vectors hold {taskCount} tasks.", nameof(gate));
            }

            if (router.InputDimension != inputDimension)
            {
                throw new ArgumentException($"The router reads width {router.InputDimension}; this module feeds it width {inputDimension}.", nameof(gate));
            }

            return;
        }

        // A custom router: probe it once with one zero token.
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        long[] shape;
        try
        {
            shape = gate.call(torch.zeros(1, 1, inputDimension)).shape;
        }
        catch (Exception exception) when (exception is not OutOfMemoryException)
        {
            throw new ArgumentException($"The router failed on an input of shape [1, 1, {inputDimension}]: {exception.Message}", nameof(gate), exception);
        }

        if (shape.Length != 3 || shape[0] != 1 || shape[1] != 1 || shape[2] != taskCount)
        {
            throw new ArgumentException(
                $"The router maps [1, 1, {inputDimension}] to [{string.Join(", ", shape)}]; expected [1, 1, {taskCount}] (one routing weight per task).", nameof(gate));
        }
    }
}
