using System.Collections;
using System.IO.Compression;
using System.Runtime.CompilerServices;
using Razorvine.Pickle;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace WeightEnsembling.Interop;

/// <summary>
/// Reads PyTorch <c>torch.save</c> checkpoints (the zip format of PyTorch ≥ 1.6: <c>archive/data.pkl</c> plus one
/// file per storage) into TorchSharp tensors through TorchSharp.PyBridge's unpickler. Before anything is unpickled,
/// every Python global the pickle references is checked against an allow-list of plain tensor data: the globals
/// PyTorch's <c>torch.load(weights_only=True)</c> allows and PyBridge can rebuild (<c>collections.OrderedDict</c>,
/// <c>torch._utils._rebuild_tensor_v2</c>, <c>torch._utils._rebuild_tensor</c>, <c>torch._utils._rebuild_parameter</c>,
/// the <c>torch.*Storage</c> types). Anything else (a pickled module, a class, a function such as <c>os.system</c>) is
/// refused with a <see cref="TorchCheckpointFormatException"/> naming the global and the file; nothing is executed.
/// The legacy non-zip format (<c>_use_new_zipfile_serialization=False</c>) is not supported by PyBridge and is refused;
/// so are tensors saved as views (non-contiguous strides, or a storage offset), which PyBridge 1.4.4 cannot rebuild.
/// </summary>
public static class TorchCheckpointReader
{
    /// <summary>The single-file weights name of a Hugging Face folder saved by PyTorch.</summary>
    public const string PyTorchModelFileName = "pytorch_model.bin";

    /// <summary>The index of a sharded <see cref="PyTorchModelFileName"/> checkpoint.</summary>
    public const string PyTorchModelIndexFileName = "pytorch_model.bin.index.json";

    private static readonly HashSet<string> AllowedGlobals = new(StringComparer.Ordinal)
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch.DoubleStorage", "torch.FloatStorage", "torch.HalfStorage", "torch.BFloat16Storage",
        "torch.LongStorage", "torch.IntStorage", "torch.ShortStorage", "torch.CharStorage", "torch.ByteStorage",
        "torch.BoolStorage", "torch.ComplexDoubleStorage", "torch.ComplexFloatStorage",
    };

    // Legacy torch.save files start with a pickled magic number: PROTO 2, LONG1 10 bytes 0x1950a86a20f9469cfc6c.
    private static readonly byte[] LegacyMagic = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

    static TorchCheckpointReader()
    {
        // PyBridge registers its constructors in its static constructor; run it first, then replace its handling of
        // torch._utils._rebuild_parameter (it throws, taking a Parameter for a whole pickled model) by PyTorch's
        // meaning: the parameter's data. Parameters appear in state dicts saved with keep_vars=True.
        RuntimeHelpers.RunClassConstructor(typeof(PyTorchUnpickler).TypeHandle);
        Unpickler.registerConstructor("torch._utils", "_rebuild_parameter", new ParameterDataConstructor());
    }

    /// <summary>
    /// Reads a <c>torch.save</c> file holding a state dict, or a dictionary nesting one, into tensors by name.
    /// With <paramref name="key"/> null: a top-level <c>"model"</c> dictionary (as Lightning Fabric's
    /// <c>fabric.save(path, {"model": model})</c> and FusionBench write it) is taken, else a top-level
    /// <c>"state_dict"</c> dictionary, else the whole file; nested dictionaries are flattened with dotted keys and values
    /// that are not tensors (epoch counters, metadata) are skipped.
    /// </summary>
    /// <param name="path">The <c>.pt</c>/<c>.pth</c>/<c>.bin</c>/<c>.ckpt</c> file.</param>
    /// <param name="key">The top-level key whose dictionary to read (e.g. <c>"model"</c>); null picks as described.</param>
    /// <returns>The tensors (CPU, in their saved dtype); the caller owns them.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="TorchCheckpointFormatException">The file is corrupt or truncated, legacy, holds a forbidden global, or <paramref name="key"/> is absent.</exception>
    public static Dictionary<string, Tensor> ReadStateDict(string path, string? key = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        string file = Path.GetFullPath(path);
        if (!File.Exists(file))
        {
            throw new FileNotFoundException($"The torch checkpoint '{file}' does not exist.", file);
        }

        var root = Unpickle(file);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            IDictionary source = root;
            if (key is not null)
            {
                source = root[key] as IDictionary ?? throw new TorchCheckpointFormatException(file, null,
                    $"it has no top-level dictionary '{key}' (top-level keys: {DescribeKeys(root)}).");
            }
            else if (root["model"] is IDictionary model)
            {
                source = model;
            }
            else if (root["state_dict"] is IDictionary stateDict)
            {
                source = stateDict;
            }

            Flatten(source, "", tensors);
            if (tensors.Count == 0)
            {
                throw new TorchCheckpointFormatException(file, null,
                    $"it holds no tensors{(key is null ? "" : $" under '{key}'")} (top-level keys: {DescribeKeys(root)}).");
            }

            foreach (var tensor in tensors.Values)
            {
                tensor.requires_grad_(false);
            }

            return tensors;
        }
        finally
        {
            // Tensors not returned (outside the chosen dictionary, or all of them on failure) are disposed here.
            var kept = new HashSet<object>(tensors.Values, ReferenceEqualityComparer.Instance);
            DisposeAll(root, kept);
        }
    }

    /// <summary>Whether <paramref name="folder"/> holds <see cref="PyTorchModelFileName"/> or <see cref="PyTorchModelIndexFileName"/>.</summary>
    /// <param name="folder">A Hugging Face model folder.</param>
    /// <returns>True when PyTorch weights are present.</returns>
    public static bool HasPyTorchWeights(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        return File.Exists(Path.Combine(folder, PyTorchModelFileName)) || File.Exists(Path.Combine(folder, PyTorchModelIndexFileName));
    }

    /// <summary>
    /// Reads the weights of a Hugging Face folder saved by PyTorch: <see cref="PyTorchModelFileName"/>, or the shards listed
    /// by <see cref="PyTorchModelIndexFileName"/>'s <c>weight_map</c> (each shard must hold exactly the tensors the index
    /// assigns to it).
    /// </summary>
    /// <param name="folder">The model folder.</param>
    /// <returns>The tensors by name, the full path of the file (or index) they came from.</returns>
    /// <exception cref="FileNotFoundException">Neither file, or a shard, exists.</exception>
    /// <exception cref="TorchCheckpointFormatException">A file is corrupt or refused, or the index does not match its shards.</exception>
    public static (Dictionary<string, Tensor> Tensors, string Source) ReadPyTorchFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        string full = Path.GetFullPath(folder);
        string single = Path.Combine(full, PyTorchModelFileName);
        if (File.Exists(single))
        {
            return (ReadStateDict(single), single);
        }

        string index = Path.Combine(full, PyTorchModelIndexFileName);
        if (!File.Exists(index))
        {
            throw new FileNotFoundException($"The folder '{full}' holds neither '{PyTorchModelFileName}' nor '{PyTorchModelIndexFileName}'.", single);
        }

        return (ReadShards(index, full), index);
    }

    private static Dictionary<string, Tensor> ReadShards(string index, string folder)
    {
        Dictionary<string, string> weightMap;
        try
        {
            using var document = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(index));
            if (!document.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != System.Text.Json.JsonValueKind.Object)
            {
                throw new TorchCheckpointFormatException(index, null, "the index has no 'weight_map' object.");
            }

            weightMap = map.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()
                ?? throw new TorchCheckpointFormatException(index, null, $"the shard of '{p.Name}' is not a file name."), StringComparer.Ordinal);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException)
        {
            throw new TorchCheckpointFormatException(index, null, $"the index is not valid JSON with a string 'weight_map': {e.Message}", e);
        }

        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var shard in weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
            {
                string shardPath = Path.GetFullPath(Path.Combine(folder, shard));
                if (Path.GetDirectoryName(shardPath) != folder)
                {
                    throw new TorchCheckpointFormatException(index, null, $"the shard '{shard}' is not a file of the index's folder.");
                }

                var tensors = ReadStateDict(shardPath);
                var expected = weightMap.Where(e => e.Value == shard).Select(e => e.Key).ToHashSet(StringComparer.Ordinal);
                var extra = tensors.Keys.Where(k => !expected.Contains(k)).ToList();
                var missing = expected.Where(k => !tensors.ContainsKey(k)).ToList();
                foreach (var (name, tensor) in tensors)
                {
                    if (expected.Contains(name))
                    {
                        result.Add(name, tensor);
                    }
                    else
                    {
                        tensor.Dispose();
                    }
                }

                if (extra.Count + missing.Count > 0)
                {
                    throw new TorchCheckpointFormatException(shardPath, null,
                        $"the shard does not match '{PyTorchModelIndexFileName}': "
                        + (missing.Count > 0 ? $"missing {string.Join(", ", missing.Order().Take(5))}" : "")
                        + (extra.Count > 0 ? $"{(missing.Count > 0 ? "; " : "")}not listed for it {string.Join(", ", extra.Order().Take(5))}" : "")
                        + ".");
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

    private static Hashtable Unpickle(string file)
    {
        using var stream = File.OpenRead(file);
        Span<byte> head = stackalloc byte[LegacyMagic.Length];
        int read = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        if (read >= 4 && head[0] == 0x50 && head[1] == 0x4b && head[2] == 0x03 && head[3] == 0x04)
        {
            stream.Position = 0;
            return UnpickleZip(file, stream);
        }

        if (read == LegacyMagic.Length && head.SequenceEqual(LegacyMagic))
        {
            throw new TorchCheckpointFormatException(file, null,
                "it uses the legacy (pre-1.6, non-zip) torch.save format, which TorchSharp.PyBridge does not read. "
                + "Re-save it in Python with torch.save(torch.load(path, weights_only=True), path) (PyTorch ≥ 1.6 writes the zip format).");
        }

        throw new TorchCheckpointFormatException(file, null,
            read == 0 ? "the file is empty." : "it is neither a torch.save zip archive nor a legacy torch.save file.");
    }

    private static Hashtable UnpickleZip(string file, FileStream stream)
    {
        ZipArchive archive;
        try
        {
            archive = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
        }
        catch (InvalidDataException e)
        {
            throw new TorchCheckpointFormatException(file, null, $"the zip archive is corrupt or truncated ({e.Message}).", e);
        }

        using (archive)
        {
            var pickles = archive.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) || e.FullName == "data.pkl").ToList();
            if (pickles.Count != 1)
            {
                throw new TorchCheckpointFormatException(file, null,
                    $"the archive holds {pickles.Count} 'data.pkl' entries; a torch.save archive holds exactly one.");
            }

            var byteOrder = archive.Entries.FirstOrDefault(e => e.FullName.EndsWith("/byteorder", StringComparison.Ordinal));
            if (byteOrder is not null)
            {
                using var reader = new StreamReader(byteOrder.Open());
                string order = reader.ReadToEnd().Trim();
                if (order != "little")
                {
                    throw new TorchCheckpointFormatException(file, null, $"its storages are '{order}'-endian; only little-endian is read.");
                }
            }

            byte[] pickle;
            try
            {
                using var entry = pickles[0].Open();
                using var copy = new MemoryStream();
                entry.CopyTo(copy);
                pickle = copy.ToArray();
            }
            catch (InvalidDataException e)
            {
                throw new TorchCheckpointFormatException(file, null, $"'{pickles[0].FullName}' cannot be read from the zip archive ({e.Message}).", e);
            }

            PickleGlobalScanner.CheckGlobals(pickle, file, pickles[0].FullName, AllowedGlobals.Contains);
        }

        stream.Position = 0;
        object loaded;
        try
        {
            loaded = PyTorchUnpickler.UnpickleStateDict(stream, leaveOpen: true);
        }
        catch (Exception e) when (e is not TorchCheckpointFormatException and not OutOfMemoryException)
        {
            throw new TorchCheckpointFormatException(file, null,
                $"TorchSharp.PyBridge could not unpickle it: {e.Message} (PyBridge rebuilds only tensors that are contiguous and "
                + "start at the first element of their storage; a file saved from views, such as a transposed or sliced tensor or "
                + "one sharing a storage, must be re-saved in Python: "
                + "torch.save({k: v.clone(memory_format=torch.contiguous_format) for k, v in state_dict.items()}, path)).", e);
        }

        return loaded as Hashtable ?? throw new TorchCheckpointFormatException(file, null, "its top-level object is not a dictionary.");
    }

    private static void Flatten(IDictionary source, string prefix, Dictionary<string, Tensor> into)
    {
        foreach (DictionaryEntry entry in source)
        {
            string name = prefix + Convert.ToString(entry.Key, System.Globalization.CultureInfo.InvariantCulture);
            switch (entry.Value)
            {
                case Tensor tensor:
                    into[name] = tensor;
                    break;
                case IDictionary nested:
                    Flatten(nested, name + ".", into);
                    break;
            }
        }
    }

    private static void DisposeAll(IDictionary source, HashSet<object> kept)
    {
        foreach (DictionaryEntry entry in source)
        {
            switch (entry.Value)
            {
                case Tensor tensor when !kept.Contains(tensor):
                    tensor.Dispose();
                    break;
                case IDictionary nested:
                    DisposeAll(nested, kept);
                    break;
            }
        }
    }

    private static string DescribeKeys(IDictionary root)
    {
        var keys = root.Keys.Cast<object>().Select(k => $"'{k}'").Order(StringComparer.Ordinal).ToList();
        return keys.Count == 0 ? "none" : string.Join(", ", keys.Take(10)) + (keys.Count > 10 ? ", ..." : "");
    }

    private sealed class ParameterDataConstructor : IObjectConstructor
    {
        // torch._utils._rebuild_parameter(data, requires_grad, backward_hooks): data was rebuilt by _rebuild_tensor_v2.
        public object construct(object[] args) =>
            args.Length > 0 && args[0] is Tensor data
                ? data
                : throw new InvalidDataException("torch._utils._rebuild_parameter was not given a tensor.");
    }
}
