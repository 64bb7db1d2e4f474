using System.Buffers;
using static TorchSharp.torch;

namespace WeightEnsembling.SafeTensors;

/// <summary>Visits the raw bytes of a contiguous CPU tensor in spans of at most 1 GiB.</summary>
internal static class TensorBytes
{
    private const long ChunkBytes = 1L << 30;

    /// <summary>
    /// Calls <paramref name="action"/> with consecutive writable spans over the tensor's memory and each span's byte
    /// offset from the start of the tensor. The tensor must be contiguous and on the CPU.
    /// </summary>
    public static void Visit(Tensor tensor, SpanAction<byte, long> action)
    {
        var elementSize = tensor.ElementSize;
        var byteLength = tensor.NumberOfElements * elementSize;
        if (byteLength == 0)
        {
            return;
        }
        if (byteLength <= ChunkBytes)
        {
            action(tensor.bytes, 0);
            return;
        }

        using var flat = tensor.reshape(-1);
        var elementsPerChunk = ChunkBytes / elementSize;
        for (long start = 0; start < tensor.NumberOfElements; start += elementsPerChunk)
        {
            var count = Math.Min(elementsPerChunk, tensor.NumberOfElements - start);
            using var part = flat.narrow(0, start, count);
            action(part.bytes, start * elementSize);
        }
    }
}
