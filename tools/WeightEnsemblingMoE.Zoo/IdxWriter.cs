using System.Buffers.Binary;
using System.IO.Compression;
using TorchSharp;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Zoo;

/// <summary>
/// Writes unsigned-byte tensors in the IDX format that <see cref="IdxReader"/> reads (type code 0x08), gzip-compressed
/// when the path ends in <c>.gz</c>. Files are written atomically: to a temporary file in the same folder, then renamed.
/// </summary>
public static class IdxWriter
{
    /// <summary>Writes an unsigned-byte tensor as IDX.</summary>
    /// <param name="path">The file path; a <c>.gz</c> ending selects gzip compression.</param>
    /// <param name="values">The tensor, uint8, rank 1 to 255, on any device; not modified.</param>
    /// <exception cref="ArgumentException">The tensor is not uint8 or has rank 0.</exception>
    public static void Write(string path, Tensor values)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(values);
        if (values.dtype != ScalarType.Byte)
        {
            throw new ArgumentException($"IDX file '{path}': only uint8 tensors are written, got {values.dtype}.", nameof(values));
        }
        if (values.dim() is < 1 or > 255)
        {
            throw new ArgumentException($"IDX file '{path}': the tensor's rank must be in [1, 255], got {values.dim()}.", nameof(values));
        }
        byte[] data;
        using (var cpu = values.cpu().contiguous())
        {
            // TensorAccessor.ToArray throws on an empty tensor: an empty split is written as a header only.
            data = cpu.numel() == 0 ? [] : cpu.data<byte>().ToArray();
        }
        var header = new byte[4 + (4 * values.dim())];
        header[2] = 0x08;
        header[3] = (byte)values.dim();
        for (int i = 0; i < values.dim(); i++)
        {
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4 + (4 * i)), checked((int)values.shape[i]));
        }

        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(folder);
        string temp = Path.Combine(folder, "." + Path.GetFileName(full) + "." + Guid.NewGuid().ToString("N") + ".tmp");
        try
        {
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                if (full.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
                {
                    using var gzip = new GZipStream(file, CompressionLevel.SmallestSize);
                    gzip.Write(header);
                    gzip.Write(data);
                }
                else
                {
                    file.Write(header);
                    file.Write(data);
                }
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
