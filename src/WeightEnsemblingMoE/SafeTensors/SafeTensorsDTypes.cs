using static TorchSharp.torch;

namespace WeightEnsembling.SafeTensors;

/// <summary>Sizes, names and TorchSharp scalar types of <see cref="SafeTensorsDType"/>.</summary>
internal static class SafeTensorsDTypes
{
    /// <summary>The size of one element in bytes.</summary>
    public static int Size(SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.BOOL or SafeTensorsDType.U8 or SafeTensorsDType.I8
            or SafeTensorsDType.F8_E4M3 or SafeTensorsDType.F8_E5M2 => 1,
        SafeTensorsDType.I16 or SafeTensorsDType.U16 or SafeTensorsDType.F16 or SafeTensorsDType.BF16 => 2,
        SafeTensorsDType.I32 or SafeTensorsDType.U32 or SafeTensorsDType.F32 => 4,
        SafeTensorsDType.F64 or SafeTensorsDType.I64 or SafeTensorsDType.U64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown safetensors dtype."),
    };

    /// <summary>Parses a header dtype string (exact, case-sensitive, as the reference does).</summary>
    public static bool TryParse(string text, out SafeTensorsDType dtype)
    {
        foreach (var value in Enum.GetValues<SafeTensorsDType>())
        {
            if (string.Equals(value.ToString(), text, StringComparison.Ordinal))
            {
                dtype = value;
                return true;
            }
        }
        dtype = default;
        return false;
    }

    /// <summary>The TorchSharp scalar type of a dtype, or null when TorchSharp has none.</summary>
    public static ScalarType? ToScalarType(SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.BOOL => ScalarType.Bool,
        SafeTensorsDType.U8 => ScalarType.Byte,
        SafeTensorsDType.I8 => ScalarType.Int8,
        SafeTensorsDType.I16 => ScalarType.Int16,
        SafeTensorsDType.F16 => ScalarType.Float16,
        SafeTensorsDType.BF16 => ScalarType.BFloat16,
        SafeTensorsDType.I32 => ScalarType.Int32,
        SafeTensorsDType.F32 => ScalarType.Float32,
        SafeTensorsDType.F64 => ScalarType.Float64,
        SafeTensorsDType.I64 => ScalarType.Int64,
        _ => null,
    };

    /// <summary>The dtype of a TorchSharp scalar type, or null when the format has none.</summary>
    public static SafeTensorsDType? FromScalarType(ScalarType type) => type switch
    {
        ScalarType.Bool => SafeTensorsDType.BOOL,
        ScalarType.Byte => SafeTensorsDType.U8,
        ScalarType.Int8 => SafeTensorsDType.I8,
        ScalarType.Int16 => SafeTensorsDType.I16,
        ScalarType.Float16 => SafeTensorsDType.F16,
        ScalarType.BFloat16 => SafeTensorsDType.BF16,
        ScalarType.Int32 => SafeTensorsDType.I32,
        ScalarType.Float32 => SafeTensorsDType.F32,
        ScalarType.Float64 => SafeTensorsDType.F64,
        ScalarType.Int64 => SafeTensorsDType.I64,
        _ => null,
    };
}
