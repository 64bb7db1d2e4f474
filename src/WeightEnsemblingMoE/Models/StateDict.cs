using TorchSharp;
using static TorchSharp.torch;
using WeightEnsembling.SafeTensors;

namespace WeightEnsembling.Models;

/// <summary>Copies tensors into a module's parameters and buffers by state-dict key, and takes them out.</summary>
public static class StateDict
{
    /// <summary>
    /// Copies <paramref name="tensors"/> into the parameters and buffers of <paramref name="module"/> whose state-dict
    /// keys match, under <c>torch.no_grad()</c>, converting dtype and device as needed. Strict mode checks every key
    /// before copying anything and throws if a key is missing, unexpected or has a different shape, leaving the module
    /// unchanged; non-strict mode copies what matches and reports the rest.
    /// </summary>
    /// <param name="module">The module to fill.</param>
    /// <param name="tensors">The values by state-dict key (not modified, not disposed).</param>
    /// <param name="strict">Whether any mismatch is an error. The default value is true.</param>
    /// <returns>What was copied and what did not match.</returns>
    /// <exception cref="StateDictLoadException">Strict mode found a mismatch.</exception>
    /// <exception cref="ArgumentException">A supplied tensor is null.</exception>
    public static StateDictLoadReport LoadInto(nn.Module module, IReadOnlyDictionary<string, Tensor> tensors, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(tensors);

        var targets = module.state_dict();
        var loaded = new List<string>();
        var missing = new List<string>();
        var mismatches = new List<StateDictShapeMismatch>();
        foreach (var (key, target) in targets)
        {
            if (!tensors.TryGetValue(key, out var source))
            {
                missing.Add(key);
                continue;
            }
            if (source is null)
            {
                throw new ArgumentException($"The tensor supplied for '{key}' is null.", nameof(tensors));
            }
            if (!source.shape.SequenceEqual(target.shape))
            {
                mismatches.Add(new StateDictShapeMismatch(key, target.shape, source.shape));
                continue;
            }
            loaded.Add(key);
        }
        var unexpected = tensors.Keys.Where(k => !targets.ContainsKey(k)).ToList();

        loaded.Sort(StringComparer.Ordinal);
        missing.Sort(StringComparer.Ordinal);
        unexpected.Sort(StringComparer.Ordinal);
        mismatches.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        var report = new StateDictLoadReport(loaded, missing, unexpected, mismatches);
        if (strict && !report.IsExactMatch)
        {
            throw new StateDictLoadException(module.GetName(), report);
        }

        using (torch.no_grad())
        {
            foreach (var key in loaded)
            {
                targets[key].copy_(tensors[key]);
            }
        }
        return report;
    }

    /// <summary>
    /// The module's parameters and buffers by state-dict key, as detached clones: the caller owns (and disposes) them,
    /// and changing them does not change the module.
    /// </summary>
    /// <param name="module">The module.</param>
    /// <returns>New tensors by key.</returns>
    public static Dictionary<string, Tensor> From(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using var scope = torch.NewDisposeScope();
        foreach (var (key, value) in module.state_dict())
        {
            result.Add(key, value.detach().clone());
        }
        foreach (var tensor in result.Values)
        {
            tensor.MoveToOuterDisposeScope();
        }
        return result;
    }
}
