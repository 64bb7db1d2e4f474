using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace WeightEnsembling.Interop;

/// <summary>
/// Writes tensors as a <c>torch.save</c> zip checkpoint through TorchSharp.PyBridge's pickler: a pickled dictionary of
/// tensors (<c>torch._utils._rebuild_tensor_v2</c> over <c>torch.*Storage</c> records), which PyTorch reads with
/// <c>torch.load(path, weights_only=True)</c> and <see cref="TorchCheckpointReader"/> reads back.
/// </summary>
public static class TorchCheckpointWriter
{
    /// <summary>
    /// Saves <paramref name="tensors"/> (as a plain dict, keys sorted), or <c>{key: tensors}</c> when <paramref name="key"/>
    /// is given (<c>"model"</c> gives Lightning Fabric's <c>fabric.save(path, {"model": ...})</c> layout). The file is
    /// written to a temporary file next to <paramref name="path"/> and renamed, so a failure leaves no partial file.
    /// </summary>
    /// <param name="path">The file to write; replaced if it exists.</param>
    /// <param name="tensors">The tensors by name (any device; saved from CPU copies, contiguous).</param>
    /// <param name="key">The top-level key to nest the dictionary under, or null for a plain state dict.</param>
    /// <exception cref="ArgumentException">A name is empty or a tensor's dtype has no PyTorch storage type.</exception>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, string? key = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(tensors);
        if (key is not null)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(key);
        }

        string full = Path.GetFullPath(path);
        // Every CPU copy made here is disposed with the scope, after the file is written.
        using (NewDisposeScope())
        {
            var state = new Dictionary<string, object>(StringComparer.Ordinal);
            foreach (var (name, tensor) in tensors.OrderBy(t => t.Key, StringComparer.Ordinal))
            {
                if (string.IsNullOrEmpty(name))
                {
                    throw new ArgumentException("A tensor name is empty.", nameof(tensors));
                }

                ArgumentNullException.ThrowIfNull(tensor, $"{nameof(tensors)}[{name}]");
                if (!IsSupported(tensor.dtype))
                {
                    throw new ArgumentException($"Tensor '{name}' has dtype {tensor.dtype}, which has no PyTorch storage type PyBridge writes.", nameof(tensors));
                }

                // PyBridge records storage_offset and stride as the tensor's and writes its elements in order: give it a
                // CPU tensor that owns its storage from offset 0, contiguous.
                var copy = tensor.detach().cpu().contiguous();
                if (copy.storage_offset() != 0)
                {
                    copy = copy.clone();
                }

                state.Add(name, copy);
            }

            object root = key is null ? state : new Dictionary<string, object>(StringComparer.Ordinal) { [key] = state };
            string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
            try
            {
                using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
                {
                    PyTorchPickler.PickleStateDict(stream, (System.Collections.IDictionary)root, leaveOpen: true);
                    stream.Flush(flushToDisk: true);
                }

                File.Move(temp, full, overwrite: true);
            }
            finally
            {
                if (File.Exists(temp))
                {
                    File.Delete(temp);
                }
            }
        }
    }

    private static bool IsSupported(ScalarType dtype) => dtype is ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16
        or ScalarType.BFloat16 or ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte
        or ScalarType.Bool or ScalarType.ComplexFloat32 or ScalarType.ComplexFloat64;
}
