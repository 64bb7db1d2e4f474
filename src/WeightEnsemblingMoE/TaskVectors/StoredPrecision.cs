using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// Half-precision storage: task vectors stored in float16 or bfloat16 are read block by block and upcast to the compute
/// dtype (float32, or float64 when the operand is float64) at the point where a stored block enters an operation, so no
/// upcast copy of all task vectors is made per call (except what autograd keeps for its backward pass).
/// </summary>
internal static class StoredPrecision
{
    /// <summary>The elements of one upcast block of a stored [T, n] tensor: 4 M (16 MB in float32).</summary>
    internal const long BlockElements = 1L << 22;

    /// <summary>Whether <paramref name="dtype"/> is a 16-bit floating storage dtype.</summary>
    public static bool IsHalf(ScalarType dtype) => dtype is ScalarType.Float16 or ScalarType.BFloat16;

    /// <summary>
    /// The dtype a storage holding <paramref name="stored"/> computes in: the stored dtype itself unless it is a 16-bit
    /// one; then float64 when <paramref name="operand"/> is float64, float32 otherwise.
    /// </summary>
    public static ScalarType ComputeType(Tensor stored, Tensor operand) =>
        !IsHalf(stored.dtype) ? stored.dtype : operand.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    /// <summary>An empty tensor of the compute dtype on <paramref name="stored"/>'s device, for <see cref="StorageArguments.Align"/>.</summary>
    public static Tensor ComputeLike(Tensor stored, Tensor operand) => empty(0, ComputeType(stored, operand), stored.device);

    /// <summary><paramref name="block"/> in <paramref name="dtype"/> (the block itself when it already is).</summary>
    public static Tensor Upcast(Tensor block, ScalarType dtype) => block.dtype == dtype ? block : block.to(dtype);

    /// <summary>
    /// <paramref name="routing"/>·<paramref name="stored"/> (+ <paramref name="addend"/>) for routing [B, T] (or [T]) and a
    /// stored [T, n] tensor, in <paramref name="routing"/>'s dtype: one matmul when the dtypes agree; otherwise block of
    /// columns by block, each block upcast just before its matmul.
    /// </summary>
    /// <param name="routing">The routing weights, already in the compute dtype.</param>
    /// <param name="stored">The stored tensor [T, n].</param>
    /// <param name="addend">Optional [1, n] (with [B, T] routing) added to every row, in the compute dtype.</param>
    public static Tensor Matmul(Tensor routing, Tensor stored, Tensor? addend = null)
    {
        if (stored.dtype == routing.dtype)
        {
            return addend is null ? routing.matmul(stored) : addmm(addend, routing, stored, beta: 1, alpha: 1);
        }

        long n = stored.shape[1];
        long columns = Math.Max(1, BlockElements / Math.Max(1, stored.shape[0]));
        var parts = new List<Tensor>();
        for (long c = 0; c < n; c += columns)
        {
            long length = Math.Min(columns, n - c);
            var block = stored.narrow(1, c, length).to(routing.dtype);
            parts.Add(addend is null ? routing.matmul(block) : addmm(addend.narrow(1, c, length), routing, block, beta: 1, alpha: 1));
        }

        return parts.Count == 1 ? parts[0] : cat(parts, routing.dim() - 1);
    }

    /// <summary>
    /// <paramref name="input"/>·<paramref name="stored"/>ᵀ for input [M, in] and a stored [R, in] tensor, in the input's
    /// dtype: one matmul when the dtypes agree; otherwise block of stored rows by block, each upcast just before its matmul.
    /// </summary>
    public static Tensor MatmulTransposed(Tensor input, Tensor stored)
    {
        if (stored.dtype == input.dtype)
        {
            return input.matmul(stored.t());
        }

        long rows = stored.shape[0];
        long perBlock = Math.Max(1, BlockElements / Math.Max(1, stored.shape[1]));
        var parts = new List<Tensor>();
        for (long r = 0; r < rows; r += perBlock)
        {
            parts.Add(input.matmul(stored.narrow(0, r, Math.Min(perBlock, rows - r)).to(input.dtype).t()));
        }

        return parts.Count == 1 ? parts[0] : cat(parts, 1);
    }
}
