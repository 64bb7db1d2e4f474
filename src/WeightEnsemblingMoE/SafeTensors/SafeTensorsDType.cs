namespace WeightEnsembling.SafeTensors;

/// <summary>
/// The element types of the safetensors format, named as in the header's <c>dtype</c> field.
/// </summary>
/// <remarks>
/// All of them can be read from a header and written; <see cref="SafeTensorsFile.Load(string)"/> turns into tensors the
/// ones TorchSharp has a scalar type for (all but <see cref="U16"/>, <see cref="U32"/>, <see cref="U64"/>,
/// <see cref="F8_E4M3"/> and <see cref="F8_E5M2"/>).
/// </remarks>
#pragma warning disable CA1707 // The member names mirror the format's dtype strings.
public enum SafeTensorsDType
{
    /// <summary>Boolean, one byte per element (0 or 1).</summary>
    BOOL,

    /// <summary>Unsigned 8-bit integer.</summary>
    U8,

    /// <summary>Signed 8-bit integer.</summary>
    I8,

    /// <summary>8-bit float, 4 exponent and 3 mantissa bits (read as header only).</summary>
    F8_E4M3,

    /// <summary>8-bit float, 5 exponent and 2 mantissa bits (read as header only).</summary>
    F8_E5M2,

    /// <summary>Signed 16-bit integer.</summary>
    I16,

    /// <summary>Unsigned 16-bit integer (read as header only).</summary>
    U16,

    /// <summary>IEEE 754 half precision float.</summary>
    F16,

    /// <summary>bfloat16 (the upper half of an IEEE 754 single).</summary>
    BF16,

    /// <summary>Signed 32-bit integer.</summary>
    I32,

    /// <summary>Unsigned 32-bit integer (read as header only).</summary>
    U32,

    /// <summary>IEEE 754 single precision float.</summary>
    F32,

    /// <summary>IEEE 754 double precision float.</summary>
    F64,

    /// <summary>Signed 64-bit integer.</summary>
    I64,

    /// <summary>Unsigned 64-bit integer (read as header only).</summary>
    U64,
}
#pragma warning restore CA1707
