using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace WeightEnsembling.Pareto;

/// <summary>
/// The router of a <see cref="ParetoWeightEnsemblingModule"/> (PWEMoE): it maps a preference vector p over the T tasks to
/// the routing weights r ∈ R^T of the task vectors.
/// <list type="bullet">
/// <item>depth 1: <c>Linear(T, T)</c>, weight ~ N(0, 0.01²), bias = λ (keys <c>fc.weight</c>, <c>fc.bias</c>);</item>
/// <item>depth 2: <c>Linear(T, 2T)</c> → ReLU → <c>Linear(2T, T)</c>, weights ~ N(0, 0.01²), first bias 0, last bias λ
/// (keys <c>fc1.*</c>, <c>fc2.*</c>).</item>
/// </list>
/// At initialisation every preference is routed to ≈ λ for every task, i.e. task arithmetic with scaling factor λ.
/// </summary>
public sealed class PreferenceRouter : nn.Module<Tensor, Tensor>
{
    private readonly Linear? fc;
    private readonly Linear? fc1;
    private readonly Linear? fc2;

    private PreferenceRouter(int depth, int taskCount, double initLambda, Generator? generator)
        : base(nameof(PreferenceRouter))
    {
        Depth = depth;
        TaskCount = taskCount;
        // Tensor.normal_ honours the generator; nn.init.normal_ ignores it in TorchSharp 0.107.
        using (no_grad())
        {
            if (depth == 1)
            {
                fc = nn.Linear(taskCount, taskCount, hasBias: true);
                fc.weight!.normal_(0.0, Moe.Router.WeightInitStd, generator);
                nn.init.constant_(fc.bias!, initLambda);
            }
            else
            {
                fc1 = nn.Linear(taskCount, 2 * taskCount, hasBias: true);
                fc2 = nn.Linear(2 * taskCount, taskCount, hasBias: true);
                fc1.weight!.normal_(0.0, Moe.Router.WeightInitStd, generator);
                nn.init.zeros_(fc1.bias!);
                fc2.weight!.normal_(0.0, Moe.Router.WeightInitStd, generator);
                nn.init.constant_(fc2.bias!, initLambda);
            }
        }

        RegisterComponents();
    }

    /// <summary>The number of linear layers: 1 or 2.</summary>
    public int Depth { get; }

    /// <summary>The number of tasks T: the width of the preference and of the routing weights.</summary>
    public int TaskCount { get; }

    /// <summary>Creates a preference router.</summary>
    /// <param name="depth">The number of linear layers, 1 or 2.</param>
    /// <param name="taskCount">The number of tasks T, at least 1.</param>
    /// <param name="initLambda">The last layer's initial bias λ, finite.</param>
    /// <param name="generator">The generator of the normal initialisation; <see langword="null"/> uses the global one.</param>
    /// <returns>A new router whose parameters require grad.</returns>
    public static PreferenceRouter Create(int depth, int taskCount, double initLambda, Generator? generator = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(depth, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(depth, 2);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(taskCount);
        if (!double.IsFinite(initLambda))
        {
            throw new ArgumentOutOfRangeException(nameof(initLambda), initLambda, "The initial routing weight λ must be finite.");
        }

        return new PreferenceRouter(depth, taskCount, initLambda, generator);
    }

    /// <summary>Maps preferences [..., T] to routing weights [..., T].</summary>
    /// <param name="input">The preference(s), last dimension T; not disposed.</param>
    /// <returns>The routing weights.</returns>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.dim() < 1 || input.shape[^1] != TaskCount)
        {
            throw new ArgumentException(
                $"The preference router reads vectors of length {TaskCount}, got shape [{string.Join(", ", input.shape)}].", nameof(input));
        }

        using var scope = NewDisposeScope();
        var result = Depth == 1 ? fc!.call(input) : fc2!.call(nn.functional.relu(fc1!.call(input)));
        return result.MoveToOuterDisposeScope();
    }
}
