using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Upscaling;

/// <summary>The steps every upscaled model shares: router state dicts and merging into a plain model.</summary>
internal static class UpscaledModelParts
{
    /// <summary>The routers' parameters by full key (<c>{path}.gate.{name}</c>), as detached clones the caller owns.</summary>
    public static Dictionary<string, Tensor> RouterStateDict(IEnumerable<(string Path, nn.Module Gate)> gates)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (path, gate) in gates)
        {
            foreach (var (name, parameter) in gate.named_parameters())
            {
                result[$"{path}.gate.{name}"] = parameter.detach().clone();
            }
        }

        return result;
    }

    /// <summary>Loads router parameters strictly: every router key, nothing else, matching shapes.</summary>
    public static void LoadRouterStateDict(IReadOnlyList<(string Path, nn.Module Gate)> gates, IReadOnlyDictionary<string, Tensor> routers)
    {
        ArgumentNullException.ThrowIfNull(routers);
        var expected = RouterStateDict(gates);
        try
        {
            var missing = expected.Keys.Where(k => !routers.ContainsKey(k)).ToList();
            var unexpected = routers.Keys.Where(k => !expected.ContainsKey(k)).ToList();
            var mismatched = expected
                .Where(e => routers.TryGetValue(e.Key, out var r) && !r.shape.SequenceEqual(e.Value.shape))
                .Select(e => new StateDictShapeMismatch(e.Key, e.Value.shape, routers[e.Key].shape))
                .ToList();
            if (missing.Count + unexpected.Count + mismatched.Count > 0)
            {
                throw new StateDictLoadException("routers", new StateDictLoadReport([], missing, unexpected, mismatched));
            }

            using var noGrad = no_grad();
            foreach (var (path, gate) in gates)
            {
                foreach (var (name, parameter) in gate.named_parameters())
                {
                    parameter.copy_(routers[$"{path}.gate.{name}"]);
                }
            }
        }
        finally
        {
            foreach (var tensor in expected.Values)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>
    /// A plain model of <paramref name="model"/>'s architecture holding its tensors outside the upscaled modules and, under
    /// each module path, the merged weights that <paramref name="modules"/> supplies. The caller owns the result.
    /// </summary>
    public static ClipVisionModel MergeAndUnload(ClipVisionModel model, IReadOnlyList<(string Path, Func<Dictionary<string, Tensor>> MergedWeights)> modules)
    {
        // The new model's parameters must outlive this call: the scope only holds the intermediate tensors.
        var result = new ClipVisionModel(model.Config, model.HasProjection);
        try
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var (key, tensor) in model.state_dict())
            {
                if (!modules.Any(m => key.StartsWith(m.Path + ".", StringComparison.Ordinal)))
                {
                    weights[key] = tensor;
                }
            }

            foreach (var (path, mergedWeights) in modules)
            {
                foreach (var (name, tensor) in mergedWeights())
                {
                    weights[$"{path}.{name}"] = tensor;
                }
            }

            StateDict.LoadInto(result, weights, strict: true);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }
}
