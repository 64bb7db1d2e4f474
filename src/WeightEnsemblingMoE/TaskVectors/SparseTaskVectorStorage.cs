using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using TorchSharp;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// Magnitude-pruned task vectors (E-WEMoE) stored compactly: for each task, the kept values in ascending element order,
/// concatenated over tasks into the frozen buffer <c>values</c>, and a bit mask of the kept positions, the frozen uint8
/// buffer <c>mask</c> of shape [T, ⌈n / 8⌉] (n elements per task vector, 1 bit per element). Bytes fall to about
/// (1 − p) of dense plus 1/32 of dense for the mask (float32): 13.1% of dense at p = 0.9.
/// </summary>
/// <remarks>
/// <para>Bit order: element i of task t (flat, row-major) is kept when bit i mod 8 (least significant bit first) of
/// byte <c>mask[t, i / 8]</c> is set, as numpy's <c>packbits(..., bitorder="little")</c>; the padding bits of the last
/// byte are zero. The values of task t are the kept elements in ascending i; task t's values start after the kept
/// counts (mask popcounts) of tasks 0..t − 1.</para>
/// <para>Pruning rule, per task and per tensor: for p &gt; 0 keep the elements with |τ| strictly greater than the
/// p-quantile of |τ| (torch.quantile's 'linear' method, computed with kthvalue), as FusionBench's sparse WEMoE does
/// (<c>mask = |τ| &gt; quantile(|τ|, p)</c>); for p = 0 keep every element, so the storage equals dense exactly
/// (FusionBench's strict rule would drop the smallest-magnitude elements even at p = 0).</para>
/// <para>Per-sample linear layers densify the T task vectors at compute time, never keeping anything decoded across
/// calls: without gradients one block of output rows at a time into a reused [T, rows·in] buffer (a managed scan of the
/// mask's 64-bit words writing each kept value at its position, O(block / 64 + kept) per task; on other devices a
/// vectorised bit unpack and one <c>masked_scatter_</c>), followed by the dense storage's <c>addmm_</c>; with gradients
/// the whole [T, n] once, followed by one <c>addmm</c>. <see cref="WeightedSum"/>, <see cref="BatchedWeightedSum"/> and
/// <see cref="ToDense"/> decode the mask to indices (a managed bit scan) and apply the values with <c>index_add</c>: the
/// simple path the tests compare the fast one with. State dicts of the earlier
/// layout (<c>values</c> and int32 <c>indices</c>) do not load into this one: a strict
/// <see cref="StateDict.LoadInto"/> reports the unexpected <c>indices</c> and missing <c>mask</c> keys;
/// rebuild the storage from the experts.</para>
/// </remarks>
public sealed class SparseTaskVectorStorage : TaskVectorStorage
{
    private readonly Tensor values;
    private readonly Tensor mask;
    private readonly long elementsPerTask;
    private readonly long maskBytesPerTask;

    /// <summary>Prunes and stores <paramref name="taskVectors"/> (one tensor per task, all of one shape; not modified).</summary>
    /// <param name="taskVectors">The task vectors τ_t, one per task.</param>
    /// <param name="sparsityRatio">The pruned fraction p, in [0, 1).</param>
    /// <param name="name">The module name. The default value is "sparse".</param>
    public SparseTaskVectorStorage(IReadOnlyList<Tensor> taskVectors, double sparsityRatio, string name = "sparse")
        : this(Prune(taskVectors, sparsityRatio), name)
    {
    }

    /// <summary>
    /// Builds the storage from per-task (values, flat indices) parts, any integer index type, any order (sorted here);
    /// copies them, so the caller still owns the parts.
    /// </summary>
    internal SparseTaskVectorStorage(IReadOnlyList<Tensor> values, IReadOnlyList<Tensor> indices, long[] shape, string name)
        : base(name, values.Count, shape)
    {
        if (values.Count != indices.Count)
        {
            throw new ArgumentException("Each task needs both values and indices.", nameof(indices));
        }

        elementsPerTask = shape.Aggregate(1L, (a, b) => a * b);
        maskBytesPerTask = (elementsPerTask + 7) / 8;
        using (var scope = NewDisposeScope())
        {
            var sortedValues = new Tensor[values.Count];
            var masks = new Tensor[values.Count];
            for (int t = 0; t < values.Count; t++)
            {
                if (values[t].numel() != indices[t].numel())
                {
                    throw new ArgumentException($"Task {t}: {values[t].numel()} values but {indices[t].numel()} indices.", nameof(indices));
                }

                var flatIndices = indices[t].reshape(-1).to(ScalarType.Int64);
                var order = flatIndices.argsort();
                sortedValues[t] = values[t].detach().reshape(-1).index_select(0, order);
                masks[t] = Pack(flatIndices, maskBytesPerTask);
            }

            this.values = cat(sortedValues, 0).DetachFromDisposeScope();
            mask = stack(masks, 0).to(values[0].device).DetachFromDisposeScope();
        }

        RegisterComponents();
    }

    private SparseTaskVectorStorage((List<Tensor> Values, List<Tensor> Indices, long[] Shape) parts, string name)
        : this(parts.Values, parts.Indices, parts.Shape, name)
    {
        foreach (var tensor in parts.Values.Concat(parts.Indices))
        {
            tensor.Dispose();
        }
    }

    /// <inheritdoc/>
    public override TaskVectorStorageKind Kind => TaskVectorStorageKind.Sparse;

    /// <inheritdoc/>
    /// <remarks>The kept values plus the mask's bytes (8 mask bits count as one element).</remarks>
    public override long ElementCount => values.numel() + mask.numel();

    /// <inheritdoc/>
    public override long Bytes => (values.numel() * values.ElementSize) + (mask.numel() * mask.ElementSize);

    /// <summary>The number of kept (non-pruned) elements of task <paramref name="task"/>.</summary>
    /// <param name="task">The task index, in [0, T).</param>
    public long KeptCount(int task)
    {
        CheckTask(task);
        using var bytes = MaskBytes();
        var counts = Counts(bytes);
        return counts[task + 1] - counts[task];
    }

    /// <inheritdoc/>
    public override Tensor WeightedSum(Tensor routing)
    {
        using var scope = NewDisposeScope();
        var r = StorageArguments.Routing(routing, this, StoredPrecision.ComputeLike(values, routing));
        var decoded = Decode(elementsPerTask);
        var result = zeros(elementsPerTask, r.dtype, values.device);
        for (int t = 0; t < TaskCount; t++)
        {
            var (v, i) = decoded.Part(values, t);
            result = result.index_add(0, i, StoredPrecision.Upcast(v, r.dtype) * r[t], 1);
        }

        return result.view(Shape.ToArray()).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor BatchedWeightedSum(Tensor routing)
    {
        using var scope = NewDisposeScope();
        var r = StorageArguments.BatchedRouting(routing, this, StoredPrecision.ComputeLike(values, routing));
        return Scatter(r).view([r.shape[0], .. Shape]).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Densifies the task vectors [T, out·in], builds the per-sample deltas [B, out·in] with one matmul and applies them
    /// with one batched matmul; without gradients, block of output rows by block in reused buffers (see
    /// <see cref="BatchedLinear"/>).
    /// </remarks>
    public override Tensor BatchedLinearDelta(Tensor input, Tensor routing)
    {
        StorageArguments.LinearInput(input, routing, this);
        using var scope = NewDisposeScope();
        var like = StoredPrecision.ComputeLike(values, input);
        var r = StorageArguments.Align(routing, like);
        var x = StorageArguments.Align(input, like);
        if (NoGradientNeeded(x, r, null, null, values))
        {
            return Blocked(x, r, null, null).MoveToOuterDisposeScope();
        }

        var deltas = r.matmul(StoredPrecision.Upcast(DenseRange(0, elementsPerTask), r.dtype)).view(r.shape[0], Shape[0], Shape[1]);
        return x.bmm(deltas.transpose(1, 2)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Densifies the task vectors [T, out·in], builds W + R·τ with one <c>addmm</c> and runs one batched matmul: half the
    /// matmul work of <c>linear(x, W, b) + BatchedLinearDelta(x, R)</c>. When no gradient is needed it does so one block
    /// of output rows at a time: the block's T task-vector rows are densified into a reused buffer and added with
    /// <c>addmm_</c> into the reused merge buffer (neither the B full weight sets nor the dense [T, ...] stack are ever
    /// allocated). A
    /// <c>torch.sparse</c> CSR matmul that never builds the B weight sets was measured about 10× slower on CPU (see
    /// docs/benchmarks.md).
    /// </remarks>
    public override Tensor BatchedLinear(Tensor input, Tensor routing, Tensor weight, Tensor? bias)
    {
        StorageArguments.BaseLinear(input, routing, weight, bias, this);
        using var scope = NewDisposeScope();
        var like = StoredPrecision.ComputeLike(values, weight);
        var r = StorageArguments.Align(routing, like);
        var x = StorageArguments.Align(input, like);
        var w = StorageArguments.Align(weight, like);
        var b = bias is null ? null : StorageArguments.Align(bias, like);
        if (NoGradientNeeded(x, r, w, b, values))
        {
            return Blocked(x, r, w, b).MoveToOuterDisposeScope();
        }

        var merged = torch.addmm(w.reshape(1, elementsPerTask), r, StoredPrecision.Upcast(DenseRange(0, elementsPerTask), r.dtype), beta: 1, alpha: 1)
            .view(r.shape[0], Shape[0], Shape[1]);
        var result = x.bmm(merged.transpose(1, 2));
        if (b is not null)
        {
            result = result.add_(b);
        }

        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor ToDense(int task)
    {
        CheckTask(task);
        using var scope = NewDisposeScope();
        var (v, i) = Decode(elementsPerTask).Part(values, task);
        var dtype = StoredPrecision.IsHalf(values.dtype) ? ScalarType.Float32 : values.dtype;
        var result = zeros(elementsPerTask, dtype, values.device).index_add(0, i, StoredPrecision.Upcast(v, dtype), 1);
        return result.view(Shape.ToArray()).MoveToOuterDisposeScope();
    }

    /// <summary>Prunes one task vector: the kept values and their flat indices (see the class remarks for the rule).</summary>
    internal static (Tensor Values, Tensor Indices) Compress(Tensor taskVector, double sparsityRatio)
    {
        using var scope = NewDisposeScope();
        var flat = taskVector.detach().reshape(-1);
        long n = flat.numel();
        var indexType = n <= int.MaxValue ? ScalarType.Int32 : ScalarType.Int64;
        Tensor indices;
        Tensor values;
        if (sparsityRatio == 0 || n == 0)
        {
            indices = arange(n, indexType, flat.device);
            values = flat.clone();
        }
        else
        {
            var magnitude = flat.abs();
            var threshold = TensorQuantile.Quantile(magnitude, sparsityRatio);
            indices = magnitude.gt(threshold).nonzero().reshape(-1);
            values = flat.index_select(0, indices);
            indices = indices.to(indexType);
        }

        return (values.MoveToOuterDisposeScope(), indices.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The kept positions of each task as indices local to blocks of <paramref name="blockElements"/> consecutive
    /// elements (global flat indices when <paramref name="blockElements"/> ≥ n), int64 on the storage's device, in the
    /// layout of <c>values</c>; <c>Bounds[t][j]</c> is where block j of task t starts in it.
    /// </summary>
    internal DecodedMask Decode(long blockElements)
    {
        using var bytes = MaskBytes();
        var counts = Counts(bytes);
        long blocks = Math.Max(1, (elementsPerTask + blockElements - 1) / blockElements);
        var bounds = new long[TaskCount][];
        var indices = empty(counts[TaskCount], ScalarType.Int64);
        var output = counts[TaskCount] == 0 ? [] : MemoryMarshal.Cast<byte, long>(indices.bytes);
        var source = bytes.bytes;
        for (int t = 0; t < TaskCount; t++)
        {
            var taskBounds = bounds[t] = new long[blocks + 1];
            var row = source.Slice(checked((int)(t * maskBytesPerTask)), checked((int)maskBytesPerTask));
            int k = checked((int)counts[t]);
            long block = 0, blockStart = 0, blockEnd = Math.Min(blockElements, elementsPerTask);
            taskBounds[0] = k;
            // The mask is LSB-first: read it 64 bits at a time (the last, shorter chunk byte by byte).
            for (int offset = 0; offset < row.Length; offset += 8)
            {
                ulong word = row.Length - offset >= 8 ? BinaryPrimitives.ReadUInt64LittleEndian(row[offset..]) : TailWord(row[offset..]);
                while (word != 0)
                {
                    long position = (8L * offset) + BitOperations.TrailingZeroCount(word);
                    word &= word - 1;
                    while (position >= blockEnd)
                    {
                        taskBounds[++block] = k;
                        blockStart = blockEnd;
                        blockEnd = Math.Min(blockEnd + blockElements, elementsPerTask);
                    }

                    output[k++] = position - blockStart;
                }
            }

            while (block < blocks)
            {
                taskBounds[++block] = k;
            }
        }

        return new DecodedMask(indices.device == values.device ? indices : indices.to(values.device), bounds);
    }

    // Up to seven trailing mask bytes as one little-endian word.
    private static ulong TailWord(ReadOnlySpan<byte> bytes)
    {
        ulong word = 0;
        for (int i = 0; i < bytes.Length; i++)
        {
            word |= (ulong)bytes[i] << (8 * i);
        }

        return word;
    }

    /// <summary>Decoded kept positions (see <see cref="Decode"/>).</summary>
    internal sealed record DecodedMask(Tensor Indices, long[][] Bounds)
    {
        /// <summary>The values and indices of block <paramref name="block"/> of task <paramref name="task"/> (views).</summary>
        public (Tensor Values, Tensor Indices) Part(Tensor values, int task, int block = 0)
        {
            long start = Bounds[task][block], length = Bounds[task][block + 1] - start;
            return (values.narrow(0, start, length), Indices.narrow(0, start, length));
        }
    }

    /// <summary>Packs flat int64 indices into a mask row of <paramref name="bytes"/> bytes (LSB-first bit order).</summary>
    private static Tensor Pack(Tensor indices, long bytes)
    {
        var bits = zeros(bytes * 8, ScalarType.Byte, indices.device).index_fill_(0, indices, 1).view(bytes, 8);
        var weights = tensor(new byte[] { 1, 2, 4, 8, 16, 32, 64, 128 }, device: indices.device);
        return bits.mul(weights).sum(1L, type: ScalarType.Int32).to(ScalarType.Byte).cpu();
    }

    private static (List<Tensor>, List<Tensor>, long[]) Prune(IReadOnlyList<Tensor> taskVectors, double sparsityRatio)
    {
        ArgumentNullException.ThrowIfNull(taskVectors);
        if (!(sparsityRatio >= 0 && sparsityRatio < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(sparsityRatio), sparsityRatio, "The sparsity ratio must lie in [0, 1).");
        }

        if (taskVectors.Count == 0)
        {
            throw new ArgumentException("At least one task vector is needed.", nameof(taskVectors));
        }

        var shape = taskVectors[0]?.shape ?? throw new ArgumentException("Task vector 0 is null.", nameof(taskVectors));
        var values = new List<Tensor>();
        var indices = new List<Tensor>();
        for (int t = 0; t < taskVectors.Count; t++)
        {
            var tau = taskVectors[t] ?? throw new ArgumentException($"Task vector {t} is null.", nameof(taskVectors));
            if (!tau.shape.SequenceEqual(shape))
            {
                throw new ArgumentException(
                    $"Task vector {t} has shape [{string.Join(", ", tau.shape)}]; task vector 0 has [{string.Join(", ", shape)}].", nameof(taskVectors));
            }

            var (v, i) = Compress(tau, sparsityRatio);
            values.Add(v.DetachFromDisposeScope());
            indices.Add(i.DetachFromDisposeScope());
        }

        return (values, indices, shape);
    }

    /// <summary>The mask as a contiguous uint8 CPU tensor (a new handle; <c>to(dtype)</c> may have converted the buffer).</summary>
    private Tensor MaskBytes()
    {
        if (mask.dtype == ScalarType.Byte && mask.device_type == DeviceType.CPU && mask.is_contiguous())
        {
            return mask.alias();
        }

        using var scope = NewDisposeScope();
        return mask.to(ScalarType.Byte).cpu().contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Prefix sums of the kept counts: counts[t] is where task t's values start, counts[T] the total.</summary>
    private long[] Counts(Tensor bytes)
    {
        var source = bytes.bytes;
        var counts = new long[TaskCount + 1];
        for (int t = 0; t < TaskCount; t++)
        {
            var row = source.Slice(checked((int)(t * maskBytesPerTask)), checked((int)maskBytesPerTask));
            long count = 0;
            var words = BitConverter.IsLittleEndian ? MemoryMarshal.Cast<byte, ulong>(row) : [];
            foreach (var word in words)
            {
                count += BitOperations.PopCount(word);
            }

            for (int i = words.Length * 8; i < row.Length; i++)
            {
                count += BitOperations.PopCount(row[i]);
            }

            counts[t + 1] = counts[t] + count;
        }

        if (counts[TaskCount] != values.numel())
        {
            throw new InvalidOperationException(
                $"Sparse storage '{GetName()}': the mask keeps {counts[TaskCount]} elements but 'values' holds {values.numel()}.");
        }

        return counts;
    }

    /// <summary>Σ_t R_bt τ_t as a new [B, n] tensor (one index_add per task).</summary>
    private Tensor Scatter(Tensor routing)
    {
        var decoded = Decode(elementsPerTask);
        var result = zeros(routing.shape[0], elementsPerTask, routing.dtype, values.device);
        for (int t = 0; t < TaskCount; t++)
        {
            var (v, i) = decoded.Part(values, t);
            result = result.index_add_(1, i, routing.narrow(1, t, 1) * StoredPrecision.Upcast(v, routing.dtype).unsqueeze(0), 1);
        }

        return result;
    }

    /// <summary>
    /// The per-sample linear layer block of output rows by block, in the reused buffer (no gradient needed): per block,
    /// the T task vectors' rows are densified into a second reused buffer (<see cref="Densify"/>) and added with one
    /// <c>addmm_</c>, as the dense storage does.
    /// </summary>
    private Tensor Blocked(Tensor x, Tensor r, Tensor? w, Tensor? b)
    {
        if (PerSampleGemmKernel.IsSupported && values.dtype == ScalarType.Float32 && x.dtype == ScalarType.Float32
            && x.device_type == DeviceType.CPU && ManagedDensifyApplies())
        {
            return PerSampleGemm(x, r, w, b);
        }

        long rowsPerBlock = RowsPerBlock(x.shape[0]);
        long inFeatures = Shape[1];
        var offsets = BlockOffsets(rowsPerBlock * inFeatures);
        bool managed = ManagedDensifyApplies();
        using var maskBits = managed ? MaskBytes() : MaskOnValuesDevice();
        return BlockedLinear(x, w, b, (block, row, rows) =>
        {
            int j = checked((int)(row / rowsPerBlock));
            var scratch = SecondWorkspace(TaskCount * rowsPerBlock * inFeatures, values)
                .narrow(0, 0, TaskCount * rows * inFeatures).view(TaskCount, rows * inFeatures);
            Densify(maskBits, managed, row * inFeatures, rows * inFeatures, offsets, j, scratch);
            block.addmm_(r, StoredPrecision.Upcast(scratch, r.dtype), beta: 1, alpha: 1);
        });
    }

    /// <summary>
    /// The per-sample linear layer through <see cref="PerSampleGemmKernel"/> (float32 CPU values, AVX2 + FMA): the kernel
    /// asks for each (task, 16 output rows, depth block) panel once, and <see cref="SparsePanels"/> decodes those rows'
    /// mask bits into it, so nothing larger than one panel is ever dense.
    /// </summary>
    private unsafe Tensor PerSampleGemm(Tensor x, Tensor r, Tensor? w, Tensor? b)
    {
        using var scope = NewDisposeScope();
        long outFeatures = Shape[0], inFeatures = Shape[1];
        var rowOffsets = BlockOffsets(inFeatures);

        // The cursors (T·out values, 192 KB for a ViT-B/32 layer at T = 8) come from the shared pool: a fresh array of
        // that size per call would be a large-object-heap allocation on every layer of every forward.
        int cursors = checked((int)(TaskCount * outFeatures));
        long[] cursor = ArrayPool<long>.Shared.Rent(cursors);
        for (int t = 0; t < TaskCount; t++)
        {
            Array.Copy(rowOffsets[t], 0, cursor, t * outFeatures, outFeatures);
        }

        var maskBytes = MaskBytes();
        Tensor result;
        try
        {
            fixed (long* c = cursor)
            {
                var source = new SparsePanels(
                    (byte*)FusedMergeKernel.Address(maskBytes),
                    maskBytesPerTask,
                    values.numel() == 0 ? null : (float*)FusedMergeKernel.Address(values),
                    values.numel(),
                    c,
                    checked((int)outFeatures),
                    checked((int)inFeatures));
                result = PerSampleGemmKernel.Linear(source, TaskCount, x, r, w, b, outFeatures);
            }
        }
        finally
        {
            ArrayPool<long>.Shared.Return(cursor);
        }

        GC.KeepAlive(maskBytes);
        GC.KeepAlive(values);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Elements [<paramref name="start"/>, <paramref name="start"/> + <paramref name="length"/>) of every task vector,
    /// dense, [T, length], a new tensor: the simple-path and test entry to <see cref="Densify"/>.
    /// </summary>
    /// <param name="start">The first flat element.</param>
    /// <param name="length">The number of elements.</param>
    /// <param name="managed">Force the managed (true) or tensor-op (false) way; null picks as the fast path does.</param>
    internal Tensor DenseRange(long start, long length, bool? managed = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + length, elementsPerTask);
        bool useManaged = managed ?? ManagedDensifyApplies();
        if (useManaged && !ManagedDensifyApplies())
        {
            throw new InvalidOperationException("The managed densify needs contiguous CPU values that do not require grad.");
        }

        long[][] offsets;
        using (var bytes = MaskBytes())
        {
            var counts = Counts(bytes);
            var mask = bytes.bytes;
            offsets = new long[TaskCount][];
            for (int t = 0; t < TaskCount; t++)
            {
                var row = mask.Slice(checked((int)(t * maskBytesPerTask)), checked((int)maskBytesPerTask));
                long first = counts[t] + PopCount(row, 0, start);
                offsets[t] = [first, first + PopCount(row, start, start + length)];
            }
        }

        using var maskBits = useManaged ? MaskBytes() : MaskOnValuesDevice();
        var result = empty(TaskCount, length, values.dtype, values.device);
        Densify(maskBits, useManaged, start, length, offsets, 0, result);
        return result;
    }

    /// <summary>
    /// Writes elements [<paramref name="start"/>, <paramref name="start"/> + <paramref name="length"/>) of every task
    /// vector, dense, into <paramref name="into"/> [T, length] (overwritten). Managed way (contiguous CPU values, see
    /// <see cref="ManagedDensifyApplies"/>): per task, clear the row and scan the mask's 64-bit words, writing each kept
    /// value at its position (O(length / 64 + kept), raw element bytes, so any dtype). Tensor-op way (other devices, or
    /// values that require grad): unpack the mask bytes to a bool mask (<c>bytes.unsqueeze(-1) &amp; [1, 2, …, 128] ≠ 0</c>)
    /// and write the block's kept values of all tasks with one <c>masked_scatter_</c>. Nothing decoded survives the call.
    /// </summary>
    /// <param name="maskBits">The mask: uint8 contiguous CPU (<see cref="MaskBytes"/>) for the managed way, uint8 on the values' device (<see cref="MaskOnValuesDevice"/>) otherwise.</param>
    /// <param name="managed">Which way.</param>
    /// <param name="start">The first flat element.</param>
    /// <param name="length">The number of elements.</param>
    /// <param name="offsets">Kept-value offsets (<see cref="BlockOffsets"/>): the range's values of task t are <c>values[offsets[t][block] .. offsets[t][block + 1])</c>.</param>
    /// <param name="block">Which block of <paramref name="offsets"/> the range is.</param>
    /// <param name="into">A contiguous [T, length] tensor of the values' dtype and device.</param>
    private void Densify(Tensor maskBits, bool managed, long start, long length, long[][] offsets, int block, Tensor into)
    {
        if (managed)
        {
            var mask = maskBits.bytes;
            for (int t = 0; t < TaskCount; t++)
            {
                long from = offsets[t][block], count = offsets[t][block + 1] - from;
                using var part = values.narrow(0, from, count);
                using var row = into.select(0, t);
                var source = count == 0 ? [] : part.bytes;
                var target = length == 0 ? [] : row.bytes;
                var maskRow = mask.Slice(checked((int)(t * maskBytesPerTask)), checked((int)maskBytesPerTask));
                int written = values.ElementSize switch
                {
                    1 => Fill(maskRow, start, source, target),
                    2 => Fill(maskRow, start, MemoryMarshal.Cast<byte, ushort>(source), MemoryMarshal.Cast<byte, ushort>(target)),
                    4 => Fill(maskRow, start, MemoryMarshal.Cast<byte, uint>(source), MemoryMarshal.Cast<byte, uint>(target)),
                    8 => Fill(maskRow, start, MemoryMarshal.Cast<byte, ulong>(source), MemoryMarshal.Cast<byte, ulong>(target)),
                    _ => throw new InvalidOperationException($"Unexpected element size {values.ElementSize}."),
                };
                if (written != count)
                {
                    throw new InvalidOperationException($"Sparse storage '{GetName()}': task {t}'s mask and values disagree.");
                }
            }

            return;
        }

        long byteStart = start / 8, byteEnd = (start + length + 7) / 8, shift = start % 8;
        using var scope = NewDisposeScope();
        var weights = tensor(new byte[] { 1, 2, 4, 8, 16, 32, 64, 128 }, device: maskBits.device);
        var bits = maskBits.narrow(1, byteStart, byteEnd - byteStart).unsqueeze(-1).bitwise_and(weights).ne(0)
            .view(TaskCount, (byteEnd - byteStart) * 8).narrow(1, shift, length);
        var parts = Enumerable.Range(0, TaskCount)
            .Select(t => values.narrow(0, offsets[t][block], offsets[t][block + 1] - offsets[t][block])).ToArray();
        into.zero_().masked_scatter_(bits, TaskCount == 1 ? parts[0] : cat(parts, 0));
    }

    /// <summary>
    /// Clears <paramref name="target"/> and writes <paramref name="source"/>'s elements, in order, at the set bits of
    /// <paramref name="maskRow"/> in [<paramref name="start"/>, <paramref name="start"/> + target.Length); returns how many
    /// were written (stops at the end of <paramref name="source"/>).
    /// </summary>
    private static unsafe int Fill<TElement>(ReadOnlySpan<byte> maskRow, long start, ReadOnlySpan<TElement> source, Span<TElement> target)
        where TElement : unmanaged
    {
        target.Clear();
        if (target.Length == 0)
        {
            return 0;
        }

        fixed (byte* mask = maskRow)
        fixed (TElement* from = source)
        fixed (TElement* to = target)
        {
            return Decode(mask, maskRow.Length, start, target.Length, from, source.Length, to, stride: 1);
        }
    }

    /// <summary>
    /// Writes <paramref name="source"/>'s first values, in order, at target[(p − start)·<paramref name="stride"/>] for the
    /// set bits p (LSB first) of <paramref name="mask"/> (<paramref name="maskBytes"/> bytes) in [<paramref name="start"/>,
    /// <paramref name="start"/> + <paramref name="length"/>), onto a target already cleared; returns how many were written,
    /// or one more than <paramref name="available"/> if the bits outnumber the values (the caller reports the mismatch).
    /// The one decoder of the mask: <see cref="Fill{TElement}"/> writes a contiguous row (stride 1), the per-sample GEMM's
    /// panels a column of 16-wide panel rows (stride 16).
    /// </summary>
    private static unsafe int Decode<TElement>(byte* mask, long maskBytes, long start, int length, TElement* source, long available, TElement* target, int stride)
        where TElement : unmanaged
    {
        int k = 0;
        long end = start + length;
        long firstByte = start / 8, lastByte = (end - 1) / 8;
        for (long i = firstByte; i <= lastByte; i += 8)
        {
            ulong word = i + 8 <= maskBytes
                ? BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(mask + i, 8))
                : Tail(new ReadOnlySpan<byte>(mask + i, (int)(maskBytes - i)));
            long basePosition = (8 * i) - start; // target position of bit 0 of this word
            if (basePosition < 0)
            {
                word &= ulong.MaxValue << (int)-basePosition;
            }

            long over = basePosition + 64 - length;
            if (over > 0)
            {
                word &= over >= 64 ? 0 : ulong.MaxValue >> (int)over;
            }

            TElement* row = target + (basePosition * stride);
            while (word != 0)
            {
                if (k == available)
                {
                    return k + 1;
                }

                row[BitOperations.TrailingZeroCount(word) * stride] = source[k++];
                word &= word - 1;
            }
        }

        return k;
    }

    /// <summary>Up to 7 trailing mask bytes as the low bytes of a word.</summary>
    private static ulong Tail(ReadOnlySpan<byte> bytes)
    {
        ulong word = 0;
        for (int b = bytes.Length - 1; b >= 0; b--)
        {
            word = (word << 8) | bytes[b];
        }

        return word;
    }

    /// <summary>Whether <see cref="Densify"/> may write with managed code: contiguous CPU values that do not require grad.</summary>
    private bool ManagedDensifyApplies() =>
        values.device_type == DeviceType.CPU && values.is_contiguous() && !values.requires_grad && values.ElementSize is 1 or 2 or 4 or 8;

    /// <summary>
    /// Where each block's kept values start in <c>values</c>: <c>result[t][j]</c> for block j of
    /// <paramref name="blockElements"/> consecutive elements of task t (j = 0..blocks; the last entry is the task's end).
    /// Popcounts of the mask, O(T·n / 64) per call; small, so nothing needs caching.
    /// </summary>
    internal long[][] BlockOffsets(long blockElements)
    {
        using var bytes = MaskBytes();
        var counts = Counts(bytes);
        long blocks = Math.Max(1, (elementsPerTask + blockElements - 1) / blockElements);
        var source = bytes.bytes;
        var result = new long[TaskCount][];
        for (int t = 0; t < TaskCount; t++)
        {
            var row = source.Slice(checked((int)(t * maskBytesPerTask)), checked((int)maskBytesPerTask));
            var offsets = result[t] = new long[blocks + 1];
            long count = counts[t], position = 0;
            offsets[0] = count;
            for (long j = 1; j <= blocks; j++)
            {
                long end = Math.Min(j * blockElements, elementsPerTask);
                count += PopCount(row, position, end);
                position = end;
                offsets[j] = count;
            }

            if (count != counts[t + 1])
            {
                throw new InvalidOperationException($"Sparse storage '{GetName()}': task {t}'s mask has set padding bits.");
            }
        }

        return result;
    }

    /// <summary>The number of set bits [<paramref name="from"/>, <paramref name="to"/>) of an LSB-first bit row.</summary>
    private static long PopCount(ReadOnlySpan<byte> row, long from, long to)
    {
        if (from >= to)
        {
            return 0;
        }

        int firstByte = checked((int)(from / 8)), lastByte = checked((int)((to - 1) / 8));
        int low = (int)(from % 8), high = (int)((to - 1) % 8) + 1;
        if (firstByte == lastByte)
        {
            return BitOperations.PopCount((uint)((row[firstByte] & ((1 << high) - 1)) >> low));
        }

        long count = BitOperations.PopCount((uint)(row[firstByte] >> low)) + BitOperations.PopCount((uint)(row[lastByte] & ((1 << high) - 1)));
        var middle = row.Slice(firstByte + 1, lastByte - firstByte - 1);
        var words = MemoryMarshal.Cast<byte, ulong>(middle);
        foreach (var word in words)
        {
            count += BitOperations.PopCount(word);
        }

        for (int i = words.Length * 8; i < middle.Length; i++)
        {
            count += BitOperations.PopCount(middle[i]);
        }

        return count;
    }

    /// <summary>The mask as uint8 on the values' device (a new handle; <c>to(dtype)</c> may have converted the buffer).</summary>
    private Tensor MaskOnValuesDevice()
    {
        if (mask.dtype == ScalarType.Byte && mask.device == values.device)
        {
            return mask.alias();
        }

        using var scope = NewDisposeScope();
        return mask.to(ScalarType.Byte).to(values.device).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The panels of <see cref="PerSampleGemm"/>: the panel is cleared, then row o of task t's panel is decoded from the
    /// mask straight into panel layout (<see cref="Decode{TElement}"/>: each kept value written at its bit's position k,
    /// as dst[k·16 + j]), starting at the value offset <c>cursor[t·out + o]</c>, which then advances past the values used;
    /// the kernel asks for each row's depth blocks in order, and its threads own disjoint rows.
    /// </summary>
    private readonly unsafe struct SparsePanels(byte* mask, long maskBytesPerTask, float* values, long valueCount, long* cursor, int outFeatures, int inFeatures)
        : PerSampleGemmKernel.IPanelSource
    {
        /// <inheritdoc/>
        public void Pack(int task, int o0, int width, int k0, int depth, float* dst)
        {
            NativeMemory.Clear(dst, (nuint)((long)depth * PerSampleGemmKernel.PanelWidth * sizeof(float)));
            byte* taskMask = mask + (task * maskBytesPerTask);
            for (int i = 0; i < width; i++)
            {
                long at = ((long)task * outFeatures) + o0 + i;
                long offset = cursor[at];
                long start = ((long)(o0 + i) * inFeatures) + k0;
                cursor[at] = offset + Decode(taskMask, maskBytesPerTask, start, depth, values + offset, valueCount - offset, dst + i, PerSampleGemmKernel.PanelWidth);
            }
        }
    }

    private void CheckTask(int task)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(task);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(task, TaskCount);
    }
}
