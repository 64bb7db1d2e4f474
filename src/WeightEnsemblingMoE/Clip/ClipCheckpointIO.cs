using TorchSharp;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>Loading CLIP modules from Hugging Face safetensors checkpoints and saving them back (shared by the CLIP models).</summary>
internal static class ClipCheckpointIO
{
    internal const string ConfigFileName = "config.json";

    /// <summary>Checks that <paramref name="folder"/> exists.</summary>
    internal static void RequireFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"The model folder '{folder}' does not exist.");
        }
    }

    /// <summary>
    /// Reads every tensor of <paramref name="checkpoint"/> that <paramref name="skip"/> does not reject, checks that each is
    /// floating point and finite, and copies them into <paramref name="module"/> strictly (every key, every shape).
    /// </summary>
    /// <param name="module">The module to fill.</param>
    /// <param name="checkpoint">The open checkpoint.</param>
    /// <param name="folder">The model folder (for messages).</param>
    /// <param name="skip">Which checkpoint keys belong to another part of the model.</param>
    /// <param name="what">What the module is, for messages (e.g. "CLIP vision model").</param>
    /// <param name="hint">An extra line for a mismatch message (e.g. the config values that decide the shapes), or null.</param>
    internal static void LoadInto(nn.Module module, SafeTensorsCheckpoint checkpoint, string folder, Func<string, bool> skip, string what, string? hint) =>
        LoadInto(module, checkpoint.Names, checkpoint.Load, checkpoint.ShardPaths.Count == 1 ? checkpoint.ShardPaths[0] : Path.GetFullPath(folder), skip, what, hint);

    /// <summary>Loads the tensors <paramref name="names"/> read by <paramref name="load"/> (from <paramref name="source"/>) into <paramref name="module"/>, strictly, after checking each is finite and floating.</summary>
    internal static void LoadInto(nn.Module module, IEnumerable<string> names, Func<string, Tensor> load, string source, Func<string, bool> skip, string what, string? hint)
    {
        using var scope = torch.NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (string name in names.Where(n => !skip(n)))
        {
            var tensor = load(name);
            tensors.Add(name, tensor);
            if (!tensor.is_floating_point())
            {
                throw new InvalidDataException($"Tensor '{name}' in '{source}' has dtype {tensor.dtype}; a floating dtype is expected.");
            }

            if (!tensor.isfinite().all().item<bool>())
            {
                throw new InvalidDataException($"Tensor '{name}' in '{source}' has NaN or infinite values.");
            }
        }

        try
        {
            StateDict.LoadInto(module, tensors, strict: true);
        }
        catch (StateDictLoadException e)
        {
            string message = $"The checkpoint '{source}' does not match the {what} of its config.json:{Environment.NewLine}"
                + e.Report.DescribeProblems();
            if (hint is not null)
            {
                message += Environment.NewLine + hint;
            }

            throw new InvalidDataException(message, e);
        }
    }

    /// <summary>
    /// Saves <paramref name="module"/>'s state dict as <c>model.safetensors</c> and <paramref name="configJson"/> as
    /// <c>config.json</c> in <paramref name="folder"/>, each written atomically, after checking every tensor is finite.
    /// With <paramref name="dtype"/>, every floating tensor is converted to it first (libtorch <c>to(dtype)</c>, round to
    /// nearest even) and <c>torch_dtype</c> in the config names it; a value that overflows the dtype is refused.
    /// </summary>
    internal static void Save(nn.Module module, string folder, string configJson, ScalarType? dtype = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        if (dtype is { } target && target is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
        {
            throw new ArgumentException($"dtype = {target} is not a save dtype; use Float32, Float16 or BFloat16.", nameof(dtype));
        }

        using var scope = torch.NewDisposeScope();
        var tensors = module.state_dict();
        foreach (var (name, tensor) in tensors)
        {
            if (tensor.is_floating_point() && !tensor.isfinite().all().item<bool>())
            {
                throw new InvalidOperationException($"Refusing to save: tensor '{name}' has NaN or infinite values.");
            }
        }

        if (dtype is { } to)
        {
            var converted = new Dictionary<string, Tensor>(tensors.Count, StringComparer.Ordinal);
            foreach (var (name, tensor) in tensors)
            {
                var value = tensor.is_floating_point() && tensor.dtype != to ? tensor.detach().to(to) : tensor;
                if (value.is_floating_point() && !value.isfinite().all().item<bool>())
                {
                    throw new InvalidOperationException(
                        $"Refusing to save: tensor '{name}' has values outside the range of {to} (largest magnitude {tensor.abs().max().item<float>()}).");
                }

                converted.Add(name, value);
            }

            tensors = converted;
            configJson = WithTorchDType(configJson, to);
        }

        // The folder is replaced as a whole (config.json and the weights from one save, never a mixture): docs/reliability.md.
        using var writer = AtomicFolderWriter.Begin(folder, name => name == ConfigFileName || SafeTensorsWriter.IsCheckpointFile(name));
        SafeTensorsWriter.Save(
            writer.PathFor(SafeTensorsWriter.SingleFileName),
            tensors,
            new Dictionary<string, string> { ["format"] = "pt" });
        var config = System.Text.Encoding.UTF8.GetBytes(configJson);
        writer.WriteFile(ConfigFileName, stream => stream.Write(config));
        writer.Commit();
    }

    /// <summary><paramref name="configJson"/> with <c>torch_dtype</c> set to PyTorch's name of <paramref name="dtype"/> (at the top level and in nested sub-configs that have one).</summary>
    private static string WithTorchDType(string configJson, ScalarType dtype)
    {
        string name = dtype switch
        {
            ScalarType.Float16 => "float16",
            ScalarType.BFloat16 => "bfloat16",
            _ => "float32",
        };
        var root = System.Text.Json.Nodes.JsonNode.Parse(configJson)!.AsObject();
        root["torch_dtype"] = name;
        foreach (var (_, child) in root.ToArray())
        {
            if (child is System.Text.Json.Nodes.JsonObject nested && nested.ContainsKey("torch_dtype"))
            {
                nested["torch_dtype"] = name;
            }
        }

        return root.ToJsonString(ClipConfigJson.WriteOptions);
    }
}
