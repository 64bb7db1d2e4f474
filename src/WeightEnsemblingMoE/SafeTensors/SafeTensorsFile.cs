using TorchSharp;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.SafeTensors;

/// <summary>
/// A safetensors file opened for reading. The header is read and validated when the file is opened (within the limits of
/// <see cref="SafeTensorsReadOptions"/>); each tensor's bytes are read only when that tensor is loaded, by positional
/// reads straight into the new tensor's memory.
/// </summary>
/// <remarks>
/// Loading is thread-safe. The file is not memory-mapped: if another process truncates it while it is open, a load
/// throws <see cref="SafeTensorsFormatException"/> (a mapping would kill the process with SIGBUS instead).
/// </remarks>
public sealed class SafeTensorsFile : IDisposable
{
    private readonly SafeTensorsHeader _header;
    private readonly FileStream _stream;
    private readonly string[] _names;
    private int _disposed;

    private SafeTensorsFile(string path, SafeTensorsHeader header, FileStream stream)
    {
        FilePath = path;
        _stream = stream;
        _header = header;
        _names = header.Tensors.Keys.ToArray();
        Array.Sort(_names, StringComparer.Ordinal);
        Metadata = header.Metadata.AsReadOnly();
    }

    /// <summary>The full path of the file.</summary>
    public string FilePath { get; }

    /// <summary>The names of the tensors, sorted ordinally.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>The header's <c>__metadata__</c> map; empty when the file has none.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens a safetensors file and validates its header with the default limits.</summary>
    /// <param name="path">The file.</param>
    /// <returns>The open file; dispose it to close the file.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SafeTensorsFormatException">The file breaks a rule of the format or a limit of <see cref="SafeTensorsReadOptions.Default"/>.</exception>
    public static SafeTensorsFile Open(string path) => Open(path, SafeTensorsReadOptions.Default);

    /// <summary>Opens a safetensors file and validates its header within the given limits.</summary>
    /// <param name="path">The file.</param>
    /// <param name="options">The limits.</param>
    /// <returns>The open file; dispose it to close the file.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SafeTensorsFormatException">The file breaks a rule of the format or one of the limits; the message names the file and the rule.</exception>
    public static SafeTensorsFile Open(string path, SafeTensorsReadOptions options)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var fullPath = Path.GetFullPath(path);
        var stream = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        try
        {
            var header = SafeTensorsHeader.Read(stream, fullPath, options);
            return new SafeTensorsFile(fullPath, header, stream);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Whether the file has a tensor of this name.</summary>
    /// <param name="name">The tensor name.</param>
    /// <returns>True when the header lists the tensor.</returns>
    public bool Contains(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _header.Tensors.ContainsKey(name);
    }

    /// <summary>What the header says about one tensor.</summary>
    /// <param name="name">The tensor name.</param>
    /// <returns>The tensor's dtype, shape and offsets.</returns>
    /// <exception cref="KeyNotFoundException">The file has no tensor of this name.</exception>
    public SafeTensorInfo GetInfo(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_header.Tensors.TryGetValue(name, out var info))
        {
            throw new KeyNotFoundException($"The safetensors file '{FilePath}' has no tensor named '{name}'.");
        }
        return info with { Shape = (long[])info.Shape.Clone() };
    }

    /// <summary>
    /// Loads one tensor: a new CPU tensor that owns its memory (a copy of the file's bytes), with the stored dtype and
    /// shape. Only this tensor's bytes are read, by positional reads into the tensor's memory.
    /// </summary>
    /// <param name="name">The tensor name.</param>
    /// <returns>The tensor; the caller owns it.</returns>
    /// <exception cref="KeyNotFoundException">The file has no tensor of this name.</exception>
    /// <exception cref="NotSupportedException">TorchSharp has no scalar type for the tensor's dtype.</exception>
    /// <exception cref="SafeTensorsFormatException">A BOOL tensor holds a byte other than 0 or 1, or the file was truncated after it was opened.</exception>
    /// <exception cref="ObjectDisposedException">The file was disposed.</exception>
    public Tensor Load(string name)
    {
        var info = GetInfo(name);
        var scalarType = SafeTensorsDTypes.ToScalarType(info.DType)
            ?? throw new NotSupportedException(
                $"Tensor '{name}' in '{FilePath}' has dtype {info.DType}, which TorchSharp cannot represent.");

        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var tensor = torch.empty(info.Shape, scalarType, torch.CPU);
        try
        {
            var start = _header.DataOffset + info.Begin;
            TensorBytes.Visit(tensor, (span, offset) => ReadExactly(span, start + offset, name));
            if (info.DType == SafeTensorsDType.BOOL)
            {
                // A BOOL byte other than 0 or 1 would become a tensor whose values torch does not define.
                var bad = -1L;
                TensorBytes.Visit(tensor, (span, offset) =>
                {
                    var index = span.IndexOfAnyExcept((byte)0, (byte)1);
                    if (index >= 0 && bad < 0)
                    {
                        bad = offset + index;
                    }
                });
                if (bad >= 0)
                {
                    throw new SafeTensorsFormatException(FilePath, name, $"BOOL element {bad} is neither 0 nor 1.");
                }
            }
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads the file's tensors straight into the parameters and buffers of <paramref name="module"/> whose state-dict
    /// keys match, without an intermediate tensor where it can: a contiguous CPU target of the stored dtype receives the
    /// file's bytes directly by positional reads (<see cref="RandomAccess.Read(Microsoft.Win32.SafeHandles.SafeFileHandle, Span{byte}, long)"/>:
    /// one copy from the page cache, no allocation); other targets (another dtype or device, BOOL) go through
    /// <see cref="Load(string)"/> and <c>copy_</c>. Same rules as <see cref="StateDict.LoadInto"/>: strict mode checks
    /// every key and shape first and throws, leaving the module unchanged.
    /// </summary>
    /// <param name="module">The module to fill.</param>
    /// <param name="strict">Whether any mismatch is an error. The default value is true.</param>
    /// <returns>What was copied and what did not match.</returns>
    /// <exception cref="StateDictLoadException">Strict mode found a mismatch.</exception>
    /// <exception cref="SafeTensorsFormatException">The file was truncated after it was opened.</exception>
    public StateDictLoadReport LoadInto(nn.Module module, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(module);
        var targets = module.state_dict();
        var loaded = new List<string>();
        var missing = new List<string>();
        var mismatches = new List<StateDictShapeMismatch>();
        foreach (var (key, target) in targets)
        {
            if (!_header.Tensors.TryGetValue(key, out var info))
            {
                missing.Add(key);
            }
            else if (!info.Shape.SequenceEqual(target.shape))
            {
                mismatches.Add(new StateDictShapeMismatch(key, target.shape, info.Shape));
            }
            else
            {
                loaded.Add(key);
            }
        }

        var unexpected = _names.Where(n => !targets.ContainsKey(n)).ToList();
        loaded.Sort(StringComparer.Ordinal);
        missing.Sort(StringComparer.Ordinal);
        mismatches.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        var report = new StateDictLoadReport(loaded, missing, unexpected, mismatches);
        if (strict && !report.IsExactMatch)
        {
            throw new StateDictLoadException(module.GetName(), report);
        }

        using var noGrad = torch.no_grad();
        foreach (var key in loaded)
        {
            var target = targets[key];
            var info = _header.Tensors[key];
            if (info.DType != SafeTensorsDType.BOOL && SafeTensorsDTypes.ToScalarType(info.DType) == target.dtype
                && target.device_type == DeviceType.CPU && target.is_contiguous())
            {
                // pread straight into the parameter's memory: the kernel copies from the page cache.
                ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
                var start = _header.DataOffset + info.Begin;
                TensorBytes.Visit(target, (span, offset) => ReadExactly(span, start + offset, key));
            }
            else
            {
                using var value = Load(key);
                target.copy_(value);
            }
        }

        return report;
    }

    /// <summary>Fills <paramref name="span"/> from the file at <paramref name="fileOffset"/> (positional reads, the file position is not used).</summary>
    private void ReadExactly(Span<byte> span, long fileOffset, string name)
    {
        while (!span.IsEmpty)
        {
            int read = RandomAccess.Read(_stream.SafeFileHandle, span, fileOffset);
            if (read <= 0)
            {
                throw new SafeTensorsFormatException(FilePath, name, "the file ended before the tensor's data (was it truncated?).");
            }

            span = span[read..];
            fileOffset += read;
        }
    }

    /// <summary>Loads every tensor (see <see cref="Load(string)"/>).</summary>
    /// <returns>The tensors by name; the caller owns them.</returns>
    public Dictionary<string, Tensor> LoadAll()
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var name in _names)
            {
                result.Add(name, Load(name));
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

    /// <summary>Closes the file. Tensors already loaded stay valid.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _stream.Dispose();
        }
    }
}
