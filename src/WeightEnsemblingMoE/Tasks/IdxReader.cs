using System.Buffers.Binary;
using System.IO.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// Reads the IDX format of MNIST and Fashion-MNIST: two zero bytes, a type code (0x08 unsigned byte, 0x09 signed byte,
/// 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, each dimension as a big-endian int32,
/// then the data in big-endian row-major order. Gzip-compressed files are recognised by their first two bytes.
/// </summary>
public static class IdxReader
{
    /// <summary>Reads an IDX file (raw or gzip) into a tensor of the file's type and shape.</summary>
    /// <param name="path">The file path.</param>
    /// <returns>The tensor (uint8, int8, int16, int32, float32 or float64), owned by the caller.</returns>
    /// <exception cref="InvalidDataException">The file is not valid IDX, or is truncated; the message names the file.</exception>
    public static Tensor Read(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        byte[] bytes = ReadContent(path);
        if (bytes.Length < 4)
        {
            throw new InvalidDataException($"IDX file '{path}' is truncated: {bytes.Length} bytes, fewer than the 4-byte magic number.");
        }
        if (bytes[0] != 0 || bytes[1] != 0)
        {
            throw new InvalidDataException($"IDX file '{path}' has a bad magic number 0x{bytes[0]:X2}{bytes[1]:X2}{bytes[2]:X2}{bytes[3]:X2}: it must start with two zero bytes.");
        }
        byte code = bytes[2];
        int elementSize = code switch
        {
            0x08 or 0x09 => 1,
            0x0B => 2,
            0x0C or 0x0D => 4,
            0x0E => 8,
            _ => throw new InvalidDataException($"IDX file '{path}' has unknown type code 0x{code:X2}; expected 0x08, 0x09, 0x0B, 0x0C, 0x0D or 0x0E."),
        };
        int rank = bytes[3];
        if (rank == 0)
        {
            throw new InvalidDataException($"IDX file '{path}' declares 0 dimensions.");
        }
        int headerLength = 4 + 4 * rank;
        if (bytes.Length < headerLength)
        {
            throw new InvalidDataException($"IDX file '{path}' is truncated: its header needs {headerLength} bytes for {rank} dimensions, the file has {bytes.Length}.");
        }
        var shape = new long[rank];
        long elements = 1;
        for (int i = 0; i < rank; i++)
        {
            int size = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(4 + 4 * i));
            if (size < 0)
            {
                throw new InvalidDataException($"IDX file '{path}' has negative dimension {i}: {size}.");
            }
            shape[i] = size;
            try
            {
                elements = checked(elements * size);
            }
            catch (OverflowException)
            {
                throw new InvalidDataException($"IDX file '{path}' declares dimensions [{string.Join(", ", shape.Take(i + 1))}...] too large to hold.");
            }
        }
        long expected = elements * elementSize;
        long actual = bytes.LongLength - headerLength;
        if (actual < expected)
        {
            throw new InvalidDataException($"IDX file '{path}' is truncated: shape [{string.Join(", ", shape)}] needs {expected} data bytes, the file has {actual}.");
        }
        if (actual > expected)
        {
            throw new InvalidDataException($"IDX file '{path}' has {actual - expected} bytes beyond the {expected} data bytes of shape [{string.Join(", ", shape)}].");
        }

        var data = bytes.AsSpan(headerLength);
        int n = checked((int)elements);
        return code switch
        {
            0x08 => tensor(data.ToArray(), shape, ScalarType.Byte),
            0x09 => tensor(Convert(data, n, 1, s => (sbyte)s[0]), shape, ScalarType.Int8),
            0x0B => tensor(Convert(data, n, 2, BinaryPrimitives.ReadInt16BigEndian), shape, ScalarType.Int16),
            0x0C => tensor(Convert(data, n, 4, BinaryPrimitives.ReadInt32BigEndian), shape, ScalarType.Int32),
            0x0D => tensor(Convert(data, n, 4, BinaryPrimitives.ReadSingleBigEndian), shape, ScalarType.Float32),
            _ => tensor(Convert(data, n, 8, BinaryPrimitives.ReadDoubleBigEndian), shape, ScalarType.Float64),
        };
    }

    /// <summary>
    /// Reads an MNIST-style dataset: unsigned-byte images [N, H, W] scaled to [0, 1] as float32 [N, 1, H, W], and
    /// unsigned-byte labels [N] as int64. The whole split is held as float32; <see cref="Data.IdxImageDataset"/> keeps it as
    /// bytes and preprocesses per batch as CLIP's image processor does.
    /// </summary>
    /// <param name="name">The task name.</param>
    /// <param name="imagesPath">The IDX file of the images.</param>
    /// <param name="labelsPath">The IDX file of the labels, or <see langword="null"/> for an unlabelled dataset.</param>
    /// <param name="classCount">The number of classes (10 for MNIST and Fashion-MNIST).</param>
    /// <param name="transform">The transform applied to each batch (e.g. <see cref="ImageTransform.ForClip"/>), or <see langword="null"/>.</param>
    /// <returns>The dataset.</returns>
    /// <exception cref="InvalidDataException">A file is invalid, holds the wrong type or rank, or the two files disagree on the count; the message names the file.</exception>
    public static InMemoryTaskDataset ReadDataset(string name, string imagesPath, string? labelsPath, int classCount, ImageTransform? transform = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentException.ThrowIfNullOrWhiteSpace(imagesPath);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        using var scope = NewDisposeScope();
        var raw = Read(imagesPath);
        if (raw.dtype != ScalarType.Byte || raw.dim() != 3)
        {
            throw new InvalidDataException($"IDX file '{imagesPath}' must hold unsigned-byte images [N, H, W], got {raw.dtype} of rank {raw.dim()}.");
        }
        var images = raw.to_type(ScalarType.Float32).div_(255f).unsqueeze(1);
        Tensor? labels = null;
        if (labelsPath is not null)
        {
            var rawLabels = Read(labelsPath);
            if (rawLabels.dtype != ScalarType.Byte || rawLabels.dim() != 1)
            {
                throw new InvalidDataException($"IDX file '{labelsPath}' must hold unsigned-byte labels [N], got {rawLabels.dtype} of rank {rawLabels.dim()}.");
            }
            if (rawLabels.shape[0] != raw.shape[0])
            {
                throw new InvalidDataException($"IDX file '{labelsPath}' holds {rawLabels.shape[0]} labels but '{imagesPath}' holds {raw.shape[0]} images.");
            }
            labels = rawLabels.to_type(ScalarType.Int64);
            if (labels.numel() > 0 && labels.max().item<long>() >= classCount)
            {
                throw new InvalidDataException($"IDX file '{labelsPath}' holds label {labels.max().item<long>()}, outside [0, {classCount}).");
            }
        }
        return new InMemoryTaskDataset(name, images, labels, classCount, transform);
    }

    private delegate T ElementReader<T>(ReadOnlySpan<byte> source);

    private static T[] Convert<T>(ReadOnlySpan<byte> data, int count, int size, ElementReader<T> read)
    {
        var result = new T[count];
        for (int i = 0; i < count; i++)
        {
            result[i] = read(data.Slice(i * size, size));
        }
        return result;
    }

    private static byte[] ReadContent(string path)
    {
        byte[] file;
        try
        {
            file = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"IDX file '{path}' cannot be read: {e.Message}", e);
        }
        if (file.Length < 2 || file[0] != 0x1F || file[1] != 0x8B)
        {
            return file;
        }
        try
        {
            using var gzip = new GZipStream(new MemoryStream(file), CompressionMode.Decompress);
            using var output = new MemoryStream();
            gzip.CopyTo(output);
            return output.ToArray();
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"IDX file '{path}' is a corrupt or truncated gzip stream: {e.Message}", e);
        }
    }
}
