using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// The task vectors τ_t = θ_t − θ_0 of one parameter tensor, for tasks t = 1..T, held in one storage
/// (dense, sparse or low-rank). A storage is a TorchSharp module whose frozen buffers hold the data, so
/// <c>to(device)</c> moves it and its owner's state dict shows it.
/// </summary>
public abstract class TaskVectorStorage : nn.Module
{
    /// <summary>Initialises the common state of a storage.</summary>
    /// <param name="name">The module name.</param>
    /// <param name="taskCount">The number of tasks T.</param>
    /// <param name="shape">The shape of the parameter tensor (without the task dimension).</param>
    protected TaskVectorStorage(string name, int taskCount, long[] shape) : base(name)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(taskCount);
        ArgumentNullException.ThrowIfNull(shape);
        TaskCount = taskCount;
        Shape = (long[])shape.Clone();
    }

    /// <summary>The number of tasks T.</summary>
    public int TaskCount { get; }

    /// <summary>The shape of the parameter tensor, without the task dimension.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>Which storage this is.</summary>
    public abstract TaskVectorStorageKind Kind { get; }

    /// <summary>The number of stored elements (values, indices and factors all counted).</summary>
    public abstract long ElementCount { get; }

    /// <summary>The number of bytes the stored tensors occupy.</summary>
    public abstract long Bytes { get; }

    /// <summary>Σ_t r_t τ_t for one routing vector <paramref name="routing"/> of shape [T]; the result has <see cref="Shape"/>.</summary>
    public abstract Tensor WeightedSum(Tensor routing);

    /// <summary>Per-sample weighted sums for routing weights R of shape [B, T]: a tensor of shape [B, ...<see cref="Shape"/>].</summary>
    public abstract Tensor BatchedWeightedSum(Tensor routing);

    /// <summary>
    /// For a linear weight (<see cref="Shape"/> = [out, in]): given inputs x of shape [B, N, in] and routing weights R of
    /// shape [B, T], returns x_b · (Σ_t R_{b,t} τ_t)ᵀ for every sample b, shape [B, N, out]. Storages compute this without
    /// densifying what they store where a cheaper formula exists.
    /// </summary>
    public abstract Tensor BatchedLinearDelta(Tensor input, Tensor routing);

    /// <summary>
    /// For a linear layer with base weight W [out, in] and base bias b [out]: given inputs x of shape [B, N, in] and routing
    /// weights R of shape [B, T], returns x_b · (W + Σ_t R_{b,t} τ_t)ᵀ + b for every sample b, shape [B, N, out]. Equals
    /// <c>linear(x, W, b) + BatchedLinearDelta(x, R)</c>; storages override it where folding W into the per-sample
    /// weights saves work (dense and sparse storages then run one batched matmul instead of two).
    /// </summary>
    /// <param name="input">The inputs x, shape [B, N, in]; not disposed.</param>
    /// <param name="routing">The routing weights R, shape [B, T]; gradients flow through them.</param>
    /// <param name="weight">The base weight W, shape <see cref="Shape"/> = [out, in]; not disposed.</param>
    /// <param name="bias">The base bias b, shape [out], or <see langword="null"/> for none.</param>
    /// <returns>The outputs, shape [B, N, out].</returns>
    /// <exception cref="ArgumentException">A shape does not match (the message names the argument).</exception>
    public virtual Tensor BatchedLinear(Tensor input, Tensor routing, Tensor weight, Tensor? bias)
    {
        StorageArguments.BaseLinear(input, routing, weight, bias, this);
        using var scope = NewDisposeScope();
        var result = nn.functional.linear(input, weight, bias).add_(BatchedLinearDelta(input, routing));
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The task vector of one task, dense, with <see cref="Shape"/> (as stored: pruned or truncated).</summary>
    public abstract Tensor ToDense(int task);

    /// <summary>
    /// Frees the calling thread's scratch buffer, which per-sample linear layers of all storages share between calls
    /// when no gradient is needed (inference, per-sample evaluation). The buffer holds one block of merged weights, at
    /// most <c>8 M</c> elements (32 MB in float32) or one output row per sample if that is larger; the sparse storage adds
    /// a second one for the block's densified task vectors (T/B times that size). The next such call on this thread
    /// allocates them again. Disposing a storage frees the calling thread's buffer too.
    /// </summary>
    public static void ReleaseWorkspace()
    {
        threadWorkspace?.Dispose();
        threadWorkspace = null;
        threadSecondWorkspace?.Dispose();
        threadSecondWorkspace = null;
    }

    /// <summary>Whether the calling thread holds a scratch buffer (for tests).</summary>
    internal static bool HasWorkspace => threadWorkspace is not null;

    /// <summary>The calling thread's buffer's element count, 0 when none (for tests).</summary>
    internal static long WorkspaceElementsForTests => threadWorkspace?.numel() ?? 0;

    /// <summary><see cref="RowsPerBlock"/> (for tests).</summary>
    internal long RowsPerBlockForTests(long batch) => RowsPerBlock(batch);

    /// <summary>
    /// The elements of one merged-weight block [B, rows, in]: 8 M (32 MB in float32). Smaller, cache-sized blocks
    /// (1.5 M) were faster on a quiet machine but slower under load, where every extra libtorch call pays for thread
    /// synchronisation (docs/benchmarks.md).
    /// </summary>
    internal const long BlockElements = 1L << 23;

    // One buffer per thread, shared by all storages (dispose scopes are thread-bound too); not a Tensor field of the
    // module, which TorchSharp would register as a buffer.
    [ThreadStatic]
    private static Tensor? threadWorkspace;

    // A second per-thread buffer for a storage's own per-block scratch (the sparse storage's densified block [T, rows·in]).
    [ThreadStatic]
    private static Tensor? threadSecondWorkspace;

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            ReleaseWorkspace();
        }

        base.Dispose(disposing);
    }

    /// <summary>
    /// Whether a per-sample linear layer may run through <see cref="BlockedLinear"/>: true when no autograd graph would be
    /// built (gradients disabled, or none of the operands requires grad), so the merged weights need not survive the call.
    /// </summary>
    private protected static bool NoGradientNeeded(Tensor input, Tensor routing, Tensor? weight, Tensor? bias, Tensor stored) =>
        !torch.is_grad_enabled()
        || !(input.requires_grad || routing.requires_grad || (weight?.requires_grad ?? false) || (bias?.requires_grad ?? false) || stored.requires_grad);

    /// <summary>
    /// x_b·(W + Δ_b)ᵀ + b computed block of output rows by block of output rows: for rows [o, o + k) the merged block
    /// [B, k, in] is written into a reused scratch buffer (W's rows copied, then <paramref name="addDelta"/> adds Δ's rows),
    /// multiplied with x by one <c>bmm</c>, and copied into the output's columns. The B merged weight sets never exist in
    /// full, so nothing large is allocated (no page faults) and each block is read back from cache. Only valid when
    /// <see cref="NoGradientNeeded"/>: the blocks are overwritten in place.
    /// </summary>
    /// <param name="input">x, [B, N, in], already in the storage's dtype and device.</param>
    /// <param name="weight">W [out, in] (same dtype and device), or null for Δ alone.</param>
    /// <param name="bias">b [out], or null.</param>
    /// <param name="addDelta">Adds Δ_b's rows [row, row + rows) into the block [B, rows·in] (flattened); called with W's rows already in it (zeros when W is null).</param>
    /// <param name="writesWeight">
    /// True when <paramref name="addDelta"/> writes the whole merged block itself (W's rows included, e.g. the fused
    /// managed merge); the block is then neither cleared nor filled with W first.
    /// </param>
    private protected Tensor BlockedLinear(Tensor input, Tensor? weight, Tensor? bias, Action<Tensor, long, long> addDelta, bool writesWeight = false)
    {
        using var scope = NewDisposeScope();
        long b = input.shape[0], outFeatures = Shape[0], inFeatures = Shape[1];
        long rowsPerBlock = RowsPerBlock(b);
        var buffer = Workspace(b * rowsPerBlock * inFeatures, input);
        {
            var output = empty(b, input.shape[1], outFeatures, input.dtype, input.device);
            var flatWeight = weight?.reshape(1, outFeatures * inFeatures);
            for (long row = 0; row < outFeatures; row += rowsPerBlock)
            {
                using var inner = NewDisposeScope();
                long rows = Math.Min(rowsPerBlock, outFeatures - row);
                var block = buffer.narrow(0, 0, b * rows * inFeatures).view(b, rows * inFeatures);
                if (writesWeight)
                {
                    // The callback writes W + Δ itself.
                }
                else if (flatWeight is null)
                {
                    block.zero_();
                }
                else
                {
                    block.copy_(flatWeight.narrow(1, row * inFeatures, rows * inFeatures).expand(b, rows * inFeatures));
                }

                addDelta(block, row, rows);
                output.narrow(2, row, rows).copy_(input.bmm(block.view(b, rows, inFeatures).transpose(1, 2)));
            }

            if (bias is not null)
            {
                output.add_(bias);
            }

            return output.MoveToOuterDisposeScope();
        }
    }

    /// <summary>How many output rows <see cref="BlockedLinear"/> merges per block for a batch of <paramref name="batch"/> samples.</summary>
    private protected long RowsPerBlock(long batch) =>
        Math.Clamp((blockElementsForTests > 0 ? blockElementsForTests : BlockElements) / Math.Max(1, batch * Shape[1]), 1, Math.Max(1, Shape[0]));

    /// <summary>
    /// Replaces <see cref="BlockElements"/> on the calling thread (tests: several blocks with small shapes); 0 restores it.
    /// </summary>
    internal static long BlockElementsForTests
    {
        get => blockElementsForTests;
        set => blockElementsForTests = value;
    }

    [ThreadStatic]
    private static long blockElementsForTests;

    /// <summary>The thread's scratch buffer with at least <paramref name="elements"/> elements of <paramref name="like"/>'s dtype and device (a new handle to it, in the current scope).</summary>
    private protected static Tensor Workspace(long elements, Tensor like) => Reuse(ref threadWorkspace, elements, like);

    /// <summary>
    /// The thread's second scratch buffer (for a storage's own per-block scratch inside <see cref="BlockedLinear"/>'s
    /// callback), with at least <paramref name="elements"/> elements of <paramref name="like"/>'s dtype and device, flat;
    /// a new handle in the current scope. Freed by <see cref="ReleaseWorkspace"/> too.
    /// </summary>
    private protected static Tensor SecondWorkspace(long elements, Tensor like) => Reuse(ref threadSecondWorkspace, elements, like);

    private static Tensor Reuse(ref Tensor? slot, long elements, Tensor like)
    {
        var current = slot;
        if (current is null || current.numel() < elements || current.dtype != like.dtype || current.device != like.device)
        {
            current?.Dispose();
            slot = current = empty(elements, like.dtype, like.device).DetachFromDisposeScope();
        }

        return current.alias();
    }
}
