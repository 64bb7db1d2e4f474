using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// Adam (Kingma and Ba; PyTorch's <c>torch.optim.Adam</c> without weight decay or amsgrad) over named parameters, with
/// its moments in named tensors so that a checkpoint can hold them and a resumed run continues bit for bit.
/// </summary>
/// <remarks>
/// Written here instead of using <c>torch.optim.Adam</c> because TorchSharp's optimizer state can only be saved to its
/// own binary format, not into the safetensors checkpoint next to the parameters.
/// </remarks>
internal sealed class AdamOptimizer : IDisposable
{
    internal const string ExpAvgPrefix = "optimizer.exp_avg.";
    internal const string ExpAvgSqPrefix = "optimizer.exp_avg_sq.";

    private readonly IReadOnlyList<KeyValuePair<string, Parameter>> parameters;
    private readonly Dictionary<string, Tensor> expAvg = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> expAvgSq = new(StringComparer.Ordinal);
    private readonly double beta1;
    private readonly double beta2;
    private readonly double epsilon;

    public AdamOptimizer(IReadOnlyList<KeyValuePair<string, Parameter>> parameters, double beta1, double beta2, double epsilon)
    {
        this.parameters = parameters;
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.epsilon = epsilon;
        foreach (var (name, parameter) in parameters)
        {
            expAvg[name] = Detached(zeros_like(parameter));
            expAvgSq[name] = Detached(zeros_like(parameter));
        }
    }

    /// <summary>The number of updates made (PyTorch's per-parameter <c>step</c>, equal for every parameter here).</summary>
    public int StepCount { get; private set; }

    /// <summary>Clears every parameter's gradient.</summary>
    public void ZeroGrad()
    {
        using var scope = NewDisposeScope();
        foreach (var (_, parameter) in parameters)
        {
            parameter.grad?.zero_();
        }
    }

    /// <summary>One Adam update with learning rate <paramref name="learningRate"/>; parameters without a gradient are skipped.</summary>
    public void Step(double learningRate)
    {
        StepCount++;
        double biasCorrection1 = 1 - Math.Pow(beta1, StepCount);
        double biasCorrection2Sqrt = Math.Sqrt(1 - Math.Pow(beta2, StepCount));
        double stepSize = learningRate / biasCorrection1;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var (name, parameter) in parameters)
        {
            var grad = parameter.grad;
            if (grad is null)
            {
                continue;
            }

            var m = expAvg[name];
            var v = expAvgSq[name];
            m.mul_(beta1).add_(grad, alpha: 1 - beta1);
            v.mul_(beta2).addcmul_(grad, grad, value: 1 - beta2);
            var denominator = (v.sqrt() / biasCorrection2Sqrt).add_(epsilon);
            parameter.addcdiv_(m, denominator, value: -stepSize);
        }
    }

    /// <summary>The moments as named tensors (views of the optimizer's own; copy before keeping them).</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> State() =>
        expAvg.Select(p => KeyValuePair.Create(ExpAvgPrefix + p.Key, p.Value))
            .Concat(expAvgSq.Select(p => KeyValuePair.Create(ExpAvgSqPrefix + p.Key, p.Value)));

    /// <summary>Restores the moments and the step count saved from an optimizer over the same named parameters.</summary>
    /// <exception cref="InvalidDataException">A moment is missing or of the wrong shape; the message names it and <paramref name="source"/>.</exception>
    public void LoadState(IReadOnlyDictionary<string, Tensor> tensors, int stepCount, string source)
    {
        using var noGrad = no_grad();
        foreach (var (prefix, moments) in new[] { (ExpAvgPrefix, expAvg), (ExpAvgSqPrefix, expAvgSq) })
        {
            foreach (var (name, target) in moments)
            {
                if (!tensors.TryGetValue(prefix + name, out var saved))
                {
                    throw new InvalidDataException($"Checkpoint '{source}' lacks optimizer tensor '{prefix + name}': it cannot resume training.");
                }

                if (!saved.shape.SequenceEqual(target.shape))
                {
                    throw new InvalidDataException(
                        $"Checkpoint '{source}': optimizer tensor '{prefix + name}' has shape [{string.Join(", ", saved.shape)}], expected [{string.Join(", ", target.shape)}].");
                }

                target.copy_(saved);
            }
        }

        StepCount = stepCount;
    }

    public void Dispose()
    {
        foreach (var tensor in expAvg.Values.Concat(expAvgSq.Values))
        {
            tensor.Dispose();
        }
    }

    private static Tensor Detached(Tensor tensor)
    {
        tensor.DetachFromDisposeScope();
        return tensor;
    }
}
