using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Models;

/// <summary>How many parameters a model has, how many of them train, and the bytes its tensors occupy.</summary>
/// <param name="Trainable">Elements of parameters that require grad (each shared parameter counted once).</param>
/// <param name="Total">Elements of all parameters and persistent buffers (frozen task vectors are buffers).</param>
/// <param name="Bytes">Bytes of all parameters and persistent buffers.</param>
public sealed record ParameterCount(long Trainable, long Total, long Bytes)
{
    /// <summary>Counts the parameters and buffers of <paramref name="module"/>, each distinct tensor once.</summary>
    /// <param name="module">The model.</param>
    /// <returns>The counts.</returns>
    public static ParameterCount Of(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        long trainable = 0, total = 0, bytes = 0;
        var seen = new HashSet<IntPtr>();
        foreach (var (_, parameter) in module.named_parameters())
        {
            if (!seen.Add(parameter.Handle))
            {
                continue;
            }
            total += parameter.numel();
            bytes += parameter.numel() * parameter.element_size();
            if (parameter.requires_grad)
            {
                trainable += parameter.numel();
            }
        }
        foreach (var (_, buffer) in module.named_buffers())
        {
            if (seen.Add(buffer.Handle))
            {
                total += buffer.numel();
                bytes += buffer.numel() * buffer.element_size();
            }
        }
        return new ParameterCount(trainable, total, bytes);
    }
}
