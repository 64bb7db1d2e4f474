namespace WeightEnsembling.SafeTensors;

/// <summary>
/// What a safetensors header says about one tensor.
/// </summary>
/// <param name="Name">The tensor's name (its state-dict key).</param>
/// <param name="DType">The element type.</param>
/// <param name="Shape">The shape; empty for a scalar.</param>
/// <param name="Begin">The offset of the first byte, relative to the start of the data section.</param>
/// <param name="End">The offset one past the last byte, relative to the start of the data section.</param>
public sealed record SafeTensorInfo(string Name, SafeTensorsDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>The number of bytes of the tensor's data (<see cref="End"/> − <see cref="Begin"/>).</summary>
    public long ByteLength => End - Begin;

    /// <summary>The number of elements (the product of <see cref="Shape"/>; 1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long count = 1;
            foreach (var dimension in Shape)
            {
                count *= dimension;
            }
            return count;
        }
    }
}
