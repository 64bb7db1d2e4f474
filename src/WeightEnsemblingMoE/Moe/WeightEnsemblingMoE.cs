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
/// <para>The state-dict keys, freezing and ownership are those of <see cref="WeightEnsemblingLayer"/>. A router shared
/// by several modules (E-WEMoE) must be passed with <c>ownsGate: false</c> to every one of them; whoever created it
/// disposes it exactly once, after the last module that uses it.</para>
/// </remarks>
public sealed class WeightEnsemblingMoE : WeightEnsemblingLayer
{
    // Not a Tensor field: TorchSharp registers Tensor fields as buffers (at RegisterComponents and on to(device)).
    private readonly StrongBox<Tensor?> lastRoutingWeights = new();

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
        : base(nameof(WeightEnsemblingMoE), baseModel, taskVectors, gate, ownsGate, Validate(baseModel, taskVectors, gate, layerIndex))
    {
        LayerIndex = layerIndex;
        RoutingMode = routingMode;
    }

    /// <summary>The layer index whose position encoding is fed to the router, or <see langword="null"/> for none.</summary>
    public int? LayerIndex { get; }

    /// <summary>How the routing weights of a batch are applied. The default value is <see cref="RoutingMode.PerSample"/>.</summary>
    public RoutingMode RoutingMode { get; set; }

    /// <summary>The router (registered as <c>gate</c>).</summary>
    public nn.Module<Tensor, Tensor> Gate => GateModule;

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
            : BatchMeanLinear(routing.mean([0L]));
        return RunWith(input, linear).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
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

        var perToken = Gate.call(gateInput);
        if (perToken.dim() != 3 || perToken.shape[0] != input.shape[0] || perToken.shape[1] != input.shape[1] || perToken.shape[2] != TaskCount)
        {
            throw new InvalidOperationException(
                $"The router must return shape [{input.shape[0]}, {input.shape[1]}, {TaskCount}], got [{string.Join(", ", perToken.shape)}].");
        }

        return perToken.mean([1L]);
    }

    // One merged weight set for the whole batch (test-time adaptation's batch-mean routing), merged once per layer.
    private LinearLayerFunction BatchMeanLinear(Tensor routing)
    {
        var cache = new Dictionary<string, (Tensor Weight, Tensor? Bias)>(StringComparer.Ordinal);
        return (name, hidden) =>
        {
            if (!cache.TryGetValue(name, out var merged))
            {
                merged = MergeLinear(name, routing);
                cache[name] = merged;
            }

            return nn.functional.linear(hidden, merged.Weight, merged.Bias);
        };
    }

    private static int Validate(nn.Module baseModel, TaskVectorDictionary taskVectors, nn.Module<Tensor, Tensor> gate, int? layerIndex)
    {
        ArgumentNullException.ThrowIfNull(gate);
        if (layerIndex is int index)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index, nameof(layerIndex));
        }

        int hiddenSize = ValidateMergeable(baseModel, taskVectors);
        int routerInput = hiddenSize + (layerIndex is null ? 0 : Router.PositionEncodingDimension);
        CheckGate(gate, routerInput, taskVectors.TaskCount);
        return hiddenSize;
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
