using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Moe;

/// <summary>
/// The built-in WEMoE router, with the semantics of FusionBench's <c>construct_weight_ensembling_gate</c>:
/// <list type="bullet">
/// <item>depth 0: a learned vector r ∈ R^T initialised to λ, independent of the input (key <c>weight</c>);</item>
/// <item>depth 1: <c>Linear(D, T)</c>, weight ~ N(0, 0.01²), bias = λ (keys <c>fc.weight</c>, <c>fc.bias</c>);</item>
/// <item>depth 2: <c>Linear(D, D)</c> → ReLU → <c>Linear(D, T)</c>, weights ~ N(0, 0.01²), first bias 0, last bias λ
/// (keys <c>fc1.*</c>, <c>fc2.*</c>).</item>
/// </list>
/// Registered as <c>gate</c> in a <see cref="WeightEnsemblingMoE"/>, its state-dict keys equal FusionBench's
/// (<c>gate.weight</c>, <c>gate.fc.*</c>, <c>gate.fc1.*</c>, <c>gate.fc2.*</c>) and its tensors have the same layout.
/// </summary>
public sealed class Router : nn.Module<Tensor, Tensor>, IRouter
{
    /// <summary>The width of the layer-position encoding a shared (E-WEMoE) router reads in front of the tokens.</summary>
    public const int PositionEncodingDimension = 8;

    /// <summary>The standard deviation of the normal initialisation of the router's linear weights.</summary>
    public const double WeightInitStd = 0.01;

    private Parameter? weight;
    private Linear? fc;
    private Linear? fc1;
    private Linear? fc2;

    private Router(int depth, int inputDimension, int taskCount, double initLambda, Generator? generator)
        : base(nameof(Router))
    {
        Depth = depth;
        InputDimension = inputDimension;
        TaskCount = taskCount;
        // Tensor.normal_ honours the generator; nn.init.normal_ ignores it in TorchSharp 0.107.
        using (torch.no_grad())
        {
            switch (depth)
            {
                case 0:
                    // Built inside a caller's dispose scope, the parameter must outlive it.
                    weight = DisposeScopes.Escaping(() => new Parameter(torch.full(taskCount, initLambda, dtype: ScalarType.Float32)));
                    break;
                case 1:
                    fc = nn.Linear(inputDimension, taskCount, hasBias: true);
                    fc.weight!.normal_(0.0, WeightInitStd, generator);
                    nn.init.constant_(fc.bias!, initLambda);
                    break;
                default:
                    fc1 = nn.Linear(inputDimension, inputDimension, hasBias: true);
                    fc2 = nn.Linear(inputDimension, taskCount, hasBias: true);
                    fc1.weight!.normal_(0.0, WeightInitStd, generator);
                    nn.init.zeros_(fc1.bias!);
                    fc2.weight!.normal_(0.0, WeightInitStd, generator);
                    nn.init.constant_(fc2.bias!, initLambda);
                    break;
            }
        }

        RegisterComponents();
    }

    /// <summary>The number of hidden layers: 0 (a learned constant), 1 (one linear layer) or 2 (linear, ReLU, linear).</summary>
    public int Depth { get; }

    /// <inheritdoc />
    public int TaskCount { get; }

    /// <inheritdoc />
    public int InputDimension { get; }

    /// <summary>Creates a router with FusionBench's initialisation.</summary>
    /// <param name="depth">The number of hidden layers, 0, 1 or 2 (FusionBench's <c>router_hidden_layers</c>; its default is 2).</param>
    /// <param name="inputDimension">The router input width D (D + <see cref="PositionEncodingDimension"/> for a shared router with position encoding).</param>
    /// <param name="taskCount">The number of tasks T.</param>
    /// <param name="initLambda">The initial routing weight λ of every task (FusionBench's <c>init_lambda</c>, e.g. 0.3).</param>
    /// <param name="generator">The random generator for the normal initialisation; <see langword="null"/> uses the global one.</param>
    /// <returns>A new router whose parameters require grad.</returns>
    public static Router Create(int depth, int inputDimension, int taskCount, double initLambda, Generator? generator = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(depth);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(depth, 2);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(inputDimension);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(taskCount);
        if (!double.IsFinite(initLambda))
        {
            throw new ArgumentOutOfRangeException(nameof(initLambda), initLambda, "The initial routing weight λ must be finite.");
        }

        return new Router(depth, inputDimension, taskCount, initLambda, generator);
    }

    /// <summary>Creates a router whose normal initialisation draws from a generator seeded with <paramref name="seed"/>.</summary>
    /// <param name="depth">The number of hidden layers, 0, 1 or 2.</param>
    /// <param name="inputDimension">The router input width.</param>
    /// <param name="taskCount">The number of tasks T.</param>
    /// <param name="initLambda">The initial routing weight λ of every task.</param>
    /// <param name="seed">The seed of the generator.</param>
    /// <returns>A new router whose parameters require grad.</returns>
    public static Router Create(int depth, int inputDimension, int taskCount, double initLambda, long seed)
    {
        using var generator = new Generator((ulong)seed);
        return Create(depth, inputDimension, taskCount, initLambda, generator);
    }

    /// <summary>
    /// The sinusoidal layer-position encoding of E-WEMoE's shared router: pe(l)_i = sin(l·10000^(−2i/d)) for i &lt; d/2,
    /// followed by the d/2 cosines (FusionBench's <c>positional_encoding</c>, computed in double and returned as float32).
    /// </summary>
    /// <param name="layerIndex">The index l of the transformer layer (0-based).</param>
    /// <param name="dimension">The encoding width d, even. The default value is <see cref="PositionEncodingDimension"/>.</param>
    /// <param name="device">The device of the result; <see langword="null"/> means the CPU.</param>
    /// <returns>A float32 tensor of shape [d].</returns>
    public static Tensor LayerPositionEncoding(int layerIndex, int dimension = PositionEncodingDimension, Device? device = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layerIndex);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(dimension);
        if (dimension % 2 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(dimension), dimension, "The position-encoding width must be even.");
        }

        int half = dimension / 2;
        var values = new float[dimension];
        for (int i = 0; i < half; i++)
        {
            double angle = layerIndex / Math.Pow(10000.0, 2.0 * i / dimension);
            values[i] = (float)Math.Sin(angle);
            values[half + i] = (float)Math.Cos(angle);
        }

        return torch.tensor(values, device: device);
    }

    /// <summary>Maps tokens [B, N, <see cref="InputDimension"/>] to per-token routing outputs [B, N, <see cref="TaskCount"/>].</summary>
    /// <param name="input">The tokens, shape [B, N, D].</param>
    /// <returns>The routing outputs, shape [B, N, T]; a depth-0 router returns its weight expanded to that shape.</returns>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.dim() != 3 || input.shape[2] != InputDimension)
        {
            throw new ArgumentException(
                $"The router input must have shape [B, N, {InputDimension}], got [{string.Join(", ", input.shape)}].", nameof(input));
        }

        using var scope = torch.NewDisposeScope();
        Tensor result = Depth switch
        {
            0 => weight!.expand(input.shape[0], input.shape[1], TaskCount),
            1 => fc!.call(input),
            _ => fc2!.call(nn.functional.relu(fc1!.call(input))),
        };
        return result.MoveToOuterDisposeScope();
    }
}
