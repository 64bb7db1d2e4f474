using System.Text;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Interop;

/// <summary>
/// Moves trained WEMoE routers between FusionBench (Python) and this library. FusionBench's CLIP WEMoE
/// (<c>fusion_bench/method/we_moe/clip_we_moe.py</c>) replaces <c>vision_model.encoder.layers[i].mlp</c> of a
/// <c>CLIPVisionModel</c> by a <c>WeightEnsemblingMoE</c> whose children are <c>gate</c> (<c>Depth_0_Gate</c>:
/// <c>weight</c> [T]; <c>Depth_1_Gate</c>: <c>fc</c>; <c>Depth_2_Gate</c>: <c>fc1</c>, <c>fc2</c>), <c>base_model</c> and
/// <c>task_vectors.{j}</c>, and saves it with <c>fabric.save(path, {"model": model})</c>. Its router keys
/// (<c>vision_model.encoder.layers.{i}.mlp.gate.*</c>) are the keys of <c>UpscaledModel.RouterStateDict()</c>:
/// <see cref="Import(IReadOnlyDictionary{string, Tensor}, IReadOnlyDictionary{string, Tensor}, string?)"/> picks them out
/// of a full FusionBench checkpoint or a routers-only file and checks them against the target,
/// <see cref="Export"/> and <see cref="Save"/> write ours for FusionBench's <c>load_state_dict(strict=False)</c>.
/// </summary>
public static class FusionBenchRouters
{
    private const string GateMarker = ".gate.";
    private const string TaskVectorsMarker = ".task_vectors.";

    /// <summary>
    /// Picks the router tensors out of a FusionBench state dict and keys them as <paramref name="expected"/> (the target's
    /// <c>UpscaledModel.RouterStateDict()</c>), ready for <c>LoadRouterStateDict</c>. Accepts a full WEMoE model state dict
    /// (its <c>base_model.*</c>, <c>task_vectors.*</c> and other keys are dropped; the number of task vectors of each module
    /// must equal its router's task count) and a routers-only state dict, with the keys under any common prefix
    /// (<c>module.</c> of DDP, <c>_orig_mod.</c> of <c>torch.compile</c>, a wrapper's attribute name), found by matching the
    /// expected keys or given as <paramref name="keyPrefix"/>.
    /// </summary>
    /// <param name="stateDict">The FusionBench tensors (e.g. <see cref="TorchCheckpointReader.ReadStateDict"/> of a Fabric checkpoint). Not modified.</param>
    /// <param name="expected">The target's router state dict: its keys and shapes are what the result must hold.</param>
    /// <param name="keyPrefix">The prefix in front of the expected keys in <paramref name="stateDict"/>; null finds it.</param>
    /// <returns>New tensors (float32 or the expected dtype, contiguous, CPU) keyed as <paramref name="expected"/>; the caller owns them.</returns>
    /// <exception cref="InvalidDataException">The modules (layer count), router depth, task count or a shape implied by the file differ from the target, or a value is not finite; the message names the keys.</exception>
    public static Dictionary<string, Tensor> Import(
        IReadOnlyDictionary<string, Tensor> stateDict, IReadOnlyDictionary<string, Tensor> expected, string? keyPrefix = null)
    {
        ArgumentNullException.ThrowIfNull(stateDict);
        ArgumentNullException.ThrowIfNull(expected);
        var target = Group(expected.Keys, "the target's router state dict");
        if (target.Count == 0)
        {
            throw new ArgumentException("The expected router state dict has no '*.gate.*' keys.", nameof(expected));
        }

        var fileGates = stateDict.Keys.Where(k => k.Contains(GateMarker, StringComparison.Ordinal)).ToList();
        if (fileGates.Count == 0)
        {
            throw new InvalidDataException(
                $"The state dict has no router keys ('*{GateMarker}*'); its keys start: {Sample(stateDict.Keys)}. "
                + "A FusionBench WEMoE checkpoint holds '<module>.gate.weight', '.gate.fc.*' or '.gate.fc1.*'/'.gate.fc2.*'.");
        }

        string prefix = keyPrefix ?? FindPrefix(Group(fileGates, "the file"), target);
        var file = Group(fileGates.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).Select(k => k[prefix.Length..]), "the file");
        var strayPrefix = fileGates.Where(k => !k.StartsWith(prefix, StringComparison.Ordinal)).ToList();
        CheckModules(file, target, prefix, strayPrefix);

        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var (module, expectedParams) in target)
            {
                var fileParams = file[module];
                CheckRouter(module, prefix, fileParams, expectedParams, stateDict, expected);
                int taskCount = (int)stateDict[$"{prefix}{module}{GateMarker}{TaskCountKey(fileParams)}"].shape[0];
                CheckTaskVectors(module, prefix, taskCount, stateDict.Keys);
                foreach (string param in expectedParams)
                {
                    string key = $"{module}{GateMarker}{param}";
                    var source = stateDict[prefix + key];
                    var reference = expected[key];
                    using var floating = source.detach().to(reference.dtype, CPU);
                    if (!floating.isfinite().all().item<bool>())
                    {
                        throw new InvalidDataException($"The router tensor '{prefix}{key}' has NaN or infinite values.");
                    }

                    result.Add(key, floating.contiguous().clone());
                }
            }

            return result;
        }
        catch
        {
            foreach (var tensor in result.Values)
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// Reads a FusionBench router file and imports it as
    /// <see cref="Import(IReadOnlyDictionary{string, Tensor}, IReadOnlyDictionary{string, Tensor}, string?)"/> does: a
    /// <c>torch.save</c> file (a Fabric checkpoint <c>{"model": state_dict}</c> or a plain state dict, read by
    /// <see cref="TorchCheckpointReader"/>) or a <c>.safetensors</c> file.
    /// </summary>
    /// <param name="path">The checkpoint.</param>
    /// <param name="expected">The target's router state dict (<c>UpscaledModel.RouterStateDict()</c>).</param>
    /// <param name="key">For a torch file, the top-level key to read (null: <c>"model"</c> if present, else the whole file).</param>
    /// <param name="keyPrefix">The prefix in front of the expected keys; null finds it.</param>
    /// <returns>The router tensors keyed as <paramref name="expected"/>; the caller owns them.</returns>
    /// <exception cref="InvalidDataException">The file does not fit the target; the message names the file and the keys.</exception>
    /// <exception cref="TorchCheckpointFormatException">The torch file cannot be read (corrupt, legacy, forbidden global).</exception>
    public static Dictionary<string, Tensor> Import(
        string path, IReadOnlyDictionary<string, Tensor> expected, string? key = null, string? keyPrefix = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(expected);
        string full = Path.GetFullPath(path);
        Dictionary<string, Tensor> tensors;
        if (full.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            using var checkpoint = SafeTensorsCheckpoint.Open(full);
            tensors = checkpoint.Names
                .Where(n => n.Contains(GateMarker, StringComparison.Ordinal) || n.Contains(TaskVectorsMarker, StringComparison.Ordinal))
                .ToDictionary(n => n, n => n.Contains(GateMarker, StringComparison.Ordinal) ? checkpoint.Load(n) : empty(0), StringComparer.Ordinal);
        }
        else
        {
            tensors = TorchCheckpointReader.ReadStateDict(full, key);
        }

        try
        {
            return Import(tensors, expected, keyPrefix);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"The router file '{full}' does not fit the target model: {e.Message}", e);
        }
        finally
        {
            foreach (var tensor in tensors.Values)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>
    /// Our routers (<c>UpscaledModel.RouterStateDict()</c>) under FusionBench's full key names, checked for one router depth
    /// and task count across modules and finite values. For a CLIP model whose MLPs are upscaled the names are the same
    /// (<c>vision_model.encoder.layers.{i}.mlp.gate.*</c>); <paramref name="keyPrefix"/> adds a wrapper's prefix.
    /// </summary>
    /// <param name="ourRouters">Our router state dict.</param>
    /// <param name="keyPrefix">A prefix for every key (e.g. <c>"module."</c>); the default value is none.</param>
    /// <returns>New float32 contiguous CPU tensors; the caller owns them.</returns>
    /// <exception cref="ArgumentException">A key is not a router key, the routers disagree on depth or task count, or a value is not finite.</exception>
    public static Dictionary<string, Tensor> Export(IReadOnlyDictionary<string, Tensor> ourRouters, string keyPrefix = "")
    {
        ArgumentNullException.ThrowIfNull(ourRouters);
        ArgumentNullException.ThrowIfNull(keyPrefix);
        Dictionary<string, HashSet<string>> modules;
        try
        {
            modules = Group(ourRouters.Keys, "the router state dict");
        }
        catch (InvalidDataException e)
        {
            throw new ArgumentException(e.Message, nameof(ourRouters), e);
        }

        if (modules.Count == 0)
        {
            throw new ArgumentException("The router state dict is empty.", nameof(ourRouters));
        }

        var (firstModule, firstParams) = modules.First();
        int depth = Depth(firstModule, firstParams, "the router state dict");
        long tasks = ourRouters[$"{firstModule}{GateMarker}{TaskCountKey(firstParams)}"].shape[0];
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var (module, parameters) in modules)
            {
                int moduleDepth = Depth(module, parameters, "the router state dict");
                long moduleTasks = ourRouters[$"{module}{GateMarker}{TaskCountKey(parameters)}"].shape[0];
                if (moduleDepth != depth || moduleTasks != tasks)
                {
                    throw new ArgumentException(
                        $"The routers disagree: '{firstModule}{GateMarker}*' has depth {depth} and {tasks} tasks, "
                        + $"'{module}{GateMarker}*' depth {moduleDepth} and {moduleTasks} tasks. FusionBench builds every module's router alike.",
                        nameof(ourRouters));
                }

                foreach (string param in parameters)
                {
                    string key = $"{module}{GateMarker}{param}";
                    using var floating = ourRouters[key].detach().to(ScalarType.Float32, CPU);
                    if (!floating.isfinite().all().item<bool>())
                    {
                        throw new ArgumentException($"Refusing to export: router tensor '{key}' has NaN or infinite values.", nameof(ourRouters));
                    }

                    result.Add(keyPrefix + key, floating.contiguous().clone());
                }
            }

            return result;
        }
        catch
        {
            foreach (var tensor in result.Values)
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// Exports our routers (<see cref="Export"/>) and writes them for FusionBench: a <c>.safetensors</c> path gets a
    /// safetensors file (<c>safetensors.torch.load_file</c>), any other path a <c>torch.save</c> zip that
    /// <c>torch.load(path, weights_only=True)</c> reads, as <c>{"model": routers}</c> (the layout of FusionBench's
    /// <c>fabric.save</c>, so <c>fabric.load(path, {"model": model}, strict=False)</c> takes it) or, with
    /// <paramref name="fabricLayout"/> false, the plain state dict. Written to a temporary file and renamed.
    /// </summary>
    /// <param name="path">The file to write.</param>
    /// <param name="ourRouters">Our router state dict (<c>UpscaledModel.RouterStateDict()</c>).</param>
    /// <param name="fabricLayout">Whether a torch file nests the routers under <c>"model"</c>. The default value is <see langword="true"/>.</param>
    /// <param name="keyPrefix">A prefix for every key; the default value is none.</param>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> ourRouters, bool fabricLayout = true, string keyPrefix = "")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var exported = Export(ourRouters, keyPrefix);
        try
        {
            if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            {
                SafeTensorsWriter.Save(path, exported, new Dictionary<string, string> { ["format"] = "pt" });
            }
            else
            {
                TorchCheckpointWriter.Save(path, exported, fabricLayout ? "model" : null);
            }
        }
        finally
        {
            foreach (var tensor in exported.Values)
            {
                tensor.Dispose();
            }
        }
    }

    // module path -> parameter names after ".gate." (e.g. "fc1.weight")
    private static Dictionary<string, HashSet<string>> Group(IEnumerable<string> keys, string what)
    {
        var modules = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (string key in keys)
        {
            int at = key.LastIndexOf(GateMarker, StringComparison.Ordinal);
            if (at < 0)
            {
                throw new InvalidDataException($"'{key}' in {what} is not a router key ('<module>{GateMarker}<parameter>').");
            }

            string module = key[..at];
            if (!modules.TryGetValue(module, out var parameters))
            {
                modules[module] = parameters = new HashSet<string>(StringComparer.Ordinal);
            }

            parameters.Add(key[(at + GateMarker.Length)..]);
        }

        return modules;
    }

    private static string FindPrefix(Dictionary<string, HashSet<string>> file, Dictionary<string, HashSet<string>> target)
    {
        var prefixes = new HashSet<string>(StringComparer.Ordinal);
        foreach (string fileModule in file.Keys)
        {
            foreach (string module in target.Keys)
            {
                if (fileModule.EndsWith(module, StringComparison.Ordinal))
                {
                    string prefix = fileModule[..^module.Length];
                    if (prefix.Length == 0 || prefix.EndsWith('.'))
                    {
                        prefixes.Add(prefix);
                    }
                }
            }
        }

        return prefixes.Count switch
        {
            1 => prefixes.Single(),
            0 => throw new InvalidDataException(
                $"None of the file's router modules ({Sample(file.Keys)}) is a module of the target ({Sample(target.Keys)}), "
                + "under any key prefix."),
            _ => prefixes.Contains("") && file.Keys.All(target.ContainsKey)
                ? ""
                : throw new InvalidDataException(
                    $"The file's router keys fit the target under several prefixes ({string.Join(", ", prefixes.Order().Select(p => $"'{p}'"))}); pass the prefix to use."),
        };
    }

    private static void CheckModules(
        Dictionary<string, HashSet<string>> file, Dictionary<string, HashSet<string>> target, string prefix, List<string> strayPrefix)
    {
        var missing = target.Keys.Where(m => !file.ContainsKey(m)).ToList();
        var unexpected = file.Keys.Where(m => !target.ContainsKey(m)).Select(m => prefix + m).Concat(strayPrefix).ToList();
        if (missing.Count + unexpected.Count == 0)
        {
            return;
        }

        var message = new StringBuilder();
        message.Append($"The file has routers for {file.Count} module(s) (layers), the target {target.Count}.");
        if (missing.Count > 0)
        {
            message.Append($" No router in the file for: {List(missing.Select(m => $"'{prefix}{m}{GateMarker}*'"))}.");
        }

        if (unexpected.Count > 0)
        {
            var modules = unexpected
                .Select(m => m.Contains(GateMarker, StringComparison.Ordinal) ? m[..m.LastIndexOf(GateMarker, StringComparison.Ordinal)] : m)
                .Distinct(StringComparer.Ordinal);
            message.Append($" Routers the target does not have: {List(modules.Select(m => $"'{m}{GateMarker}*'"))}.");
        }

        throw new InvalidDataException(message.ToString());
    }

    private static void CheckRouter(
        string module, string prefix, HashSet<string> fileParams, HashSet<string> expectedParams,
        IReadOnlyDictionary<string, Tensor> stateDict, IReadOnlyDictionary<string, Tensor> expected)
    {
        string fileKey = $"{prefix}{module}{GateMarker}";
        string targetKey = $"{module}{GateMarker}";
        int fileDepth = Depth(prefix + module, fileParams, "the file");
        int targetDepth = Depth(module, expectedParams, "the target");
        if (fileDepth != targetDepth)
        {
            throw new InvalidDataException(
                $"Router depth differs: the file's '{fileKey}*' has depth {fileDepth} ({string.Join(", ", fileParams.Order().Select(p => fileKey + p))}); "
                + $"the target's has depth {targetDepth} ({string.Join(", ", expectedParams.Order().Select(p => targetKey + p))}). "
                + "Build the target with the router depth FusionBench used (router_hidden_layers).");
        }

        string countKey = TaskCountKey(fileParams);
        long fileTasks = stateDict[fileKey + countKey].shape[0];
        long targetTasks = expected[targetKey + countKey].shape[0];
        if (fileTasks != targetTasks)
        {
            throw new InvalidDataException(
                $"Task count differs: '{fileKey}{countKey}' routes {fileTasks} tasks (shape [{string.Join(", ", stateDict[fileKey + countKey].shape)}]); "
                + $"the target has {targetTasks} task vectors. Upscale with the same experts, in FusionBench's order.");
        }

        foreach (string param in expectedParams)
        {
            var fileShape = stateDict[fileKey + param].shape;
            var targetShape = expected[targetKey + param].shape;
            if (!fileShape.SequenceEqual(targetShape))
            {
                throw new InvalidDataException(
                    $"'{fileKey}{param}' has shape [{string.Join(", ", fileShape)}]; the target's '{targetKey}{param}' has [{string.Join(", ", targetShape)}] "
                    + "(a different hidden size?).");
            }
        }
    }

    private static void CheckTaskVectors(string module, string prefix, int taskCount, IEnumerable<string> keys)
    {
        string marker = $"{prefix}{module}{TaskVectorsMarker}";
        var indices = keys.Where(k => k.StartsWith(marker, StringComparison.Ordinal))
            .Select(k => k[marker.Length..].Split('.')[0])
            .Distinct(StringComparer.Ordinal)
            .ToList();
        if (indices.Count > 0 && indices.Count != taskCount)
        {
            throw new InvalidDataException(
                $"The file is inconsistent: '{marker}*' holds {indices.Count} task vectors but its router routes {taskCount} tasks.");
        }
    }

    private static int Depth(string module, HashSet<string> parameters, string what)
    {
        if (parameters.SetEquals(["weight"]))
        {
            return 0;
        }

        if (parameters.SetEquals(["fc.weight", "fc.bias"]))
        {
            return 1;
        }

        if (parameters.SetEquals(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]))
        {
            return 2;
        }

        throw new InvalidDataException(
            $"The router '{module}{GateMarker}*' in {what} has parameters {string.Join(", ", parameters.Order())}, which are none of "
            + "FusionBench's gates (Depth_0_Gate: weight; Depth_1_Gate: fc.weight, fc.bias; Depth_2_Gate: fc1.*, fc2.*).");
    }

    // The tensor whose first dimension is the task count T.
    private static string TaskCountKey(HashSet<string> parameters) =>
        parameters.Contains("weight") ? "weight" : parameters.Contains("fc.weight") ? "fc.weight" : "fc2.weight";

    private static string List(IEnumerable<string> items)
    {
        var list = items.ToList();
        return string.Join(", ", list.Take(8)) + (list.Count > 8 ? $" and {list.Count - 8} more" : "");
    }

    private static string Sample(IEnumerable<string> keys)
    {
        var list = keys.Order(StringComparer.Ordinal).Take(4).Select(k => $"'{k}'").ToList();
        return list.Count == 0 ? "none" : string.Join(", ", list) + (keys.Skip(4).Any() ? ", ..." : "");
    }
}
