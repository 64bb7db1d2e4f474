using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
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

            foreach (var (key, tensor) in routers)
            {
                if (tensor.is_floating_point() && !tensor.isfinite().all().item<bool>())
                {
                    throw new ArgumentException($"Router tensor '{key}' contains NaN or Inf.", nameof(routers));
                }
            }

            // A router shared by several modules appears under each of them: every copy must be the same tensor, or the
            // routers were trained per module and cannot be folded into one.
            var firstKeyOf = new Dictionary<(nn.Module Gate, string Name), string>();
            foreach (var (path, gate) in gates)
            {
                foreach (var (name, _) in gate.named_parameters())
                {
                    string key = $"{path}.gate.{name}";
                    if (firstKeyOf.TryGetValue((gate, name), out var first))
                    {
                        if (!routers[key].eq(routers[first]).all().item<bool>())
                        {
                            throw new ArgumentException(
                                $"'{key}' differs from '{first}', but both belong to one shared router: these routers were trained per module, not shared.",
                                nameof(routers));
                        }
                    }
                    else
                    {
                        firstKeyOf[(gate, name)] = key;
                    }
                }
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

    /// <summary>Saves routers (disposed here) with their configuration; see <see cref="TrainedWeightsFolder"/>.</summary>
    public static void SaveRouters(string folder, UpscaledModelConfig config, Dictionary<string, Tensor> routers)
    {
        try
        {
            TrainedWeightsFolder.Save(folder, UpscaledModelConfig.FileName, (file, sha) => (config with { WeightsFile = file, WeightsSha256 = sha }).ToJson(), routers);
        }
        finally
        {
            foreach (var tensor in routers.Values)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>Checks a saved folder against the model's configuration, then loads its routers with <paramref name="load"/>.</summary>
    public static void LoadSaved(string folder, UpscaledModelConfig current, Action<IReadOnlyDictionary<string, Tensor>> load)
    {
        var saved = ReadConfig(folder);
        var differences = saved.DifferencesFrom(current);
        if (differences.Count > 0)
        {
            throw new InvalidDataException($"The routers saved in '{folder}' do not fit this model: {string.Join("; ", differences)}.");
        }

        var routers = TrainedWeightsFolder.ReadWeights(folder, UpscaledModelConfig.FileName, saved.WeightsFile!, saved.WeightsSha256!);
        try
        {
            load(routers);
        }
        catch (Exception e) when (e is StateDictLoadException or ArgumentException)
        {
            throw new InvalidDataException($"The routers saved in '{folder}' do not fit this model: {e.Message}", e);
        }
        finally
        {
            foreach (var tensor in routers.Values)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>Throws naming every difference between a saved configuration's experts and θ_0 and a pool's.</summary>
    public static void CheckPool(string folder, UpscaledModelConfig saved, Models.ModelPool modelPool)
    {
        var fingerprint = modelPool.Fingerprint();
        var target = saved with
        {
            ExpertNames = modelPool.ExpertNames,
            PretrainedFingerprint = fingerprint.Pretrained,
            TaskVectorFingerprints = fingerprint.TaskVectors,
        };
        var differences = saved.DifferencesFrom(target);
        if (differences.Count > 0)
        {
            throw new InvalidDataException($"The model saved in '{folder}' was not trained on this pool: {string.Join("; ", differences)}.");
        }
    }

    /// <summary>Reads a saved folder's configuration only.</summary>
    public static UpscaledModelConfig ReadConfig(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"The saved model folder '{folder}' does not exist.");
        }

        return UpscaledModelConfig.FromFile(Path.Combine(folder, UpscaledModelConfig.FileName));
    }

    /// <summary>
    /// Rebuilds a saved model over a pool: reads the configuration, checks its method and the pool (before anything is
    /// built), builds the model with the saved options and loads the saved weights; disposes the model on failure.
    /// </summary>
    public static T FromPretrained<T>(string folder, Models.ModelPool modelPool, string[] methods, Func<ModelUpscaler, T> build)
        where T : UpscaledModelBase
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ArgumentNullException.ThrowIfNull(modelPool);
        var saved = ReadConfig(folder);
        if (!methods.Contains(saved.Method, StringComparer.Ordinal))
        {
            throw new InvalidDataException($"'{folder}' holds a {saved.Method} model, not {string.Join(" or ", methods)}.");
        }

        CheckPool(folder, saved, modelPool);
        T model;
        try
        {
            model = build(ModelUpscaler.For(modelPool).WithOptions(saved.ToOptions()));
        }
        catch (ArgumentException e)
        {
            // The pool was checked above: an option the pool's model cannot take (e.g. a layer it lacks) is the file's fault.
            throw new InvalidDataException($"The options saved in '{folder}' do not fit this pool's model: {e.Message}", e);
        }

        try
        {
            model.LoadPretrained(folder);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
