using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using WeightEnsembling.Interop;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// A managed, streaming per-sample merge over contiguous CPU float32/float64 memory: for a range [start, start + length)
/// of the flattened weight, writes the B merged rows W[j] + Σ_t R[b, t]·τ_t[j] into a target [B, length] in one pass
/// over the task vectors. The range is walked in tiles of about 2 KB per task (T tiles stay in L1 while the B outputs are
/// written), so each τ element is read from memory once, where libtorch runs <c>addmm(W, R, τ)</c> as a K = T GEMM at a
/// fraction of the memory bandwidth (docs/benchmarks.md). Vectorised with <see cref="Vector{T}"/> and
/// <see cref="Vector.MultiplyAddEstimate(Vector{float}, Vector{float}, Vector{float})"/> (an FMA where the CPU has one).
/// </summary>
internal static unsafe class FusedMergeKernel
{
    /// <summary>Bytes of one task's tile: T such tiles (16 KB at T = 8) stay in L1 while the B outputs are written.</summary>
    private const int TileBytes = 2048;

    /// <summary>The fewest elements per thread worth a parallel split (below this the managed merge stays on one thread).</summary>
    private const long MinElementsPerThread = 1L << 14;

    /// <summary>Whether storages use the kernel at all (false: libtorch's ops everywhere; for A/B timings). The default value is true.</summary>
    internal static bool Enabled { get; set; } = true;

    /// <summary>The most threads one merge uses; 0 (the default) means libtorch's intra-op thread count (for A/B timings).</summary>
    internal static int MaxThreads { get; set; }

    /// <summary>
    /// Whether the kernel handles task vectors stored like <paramref name="stacked"/>: CPU, float32 or float64, contiguous,
    /// with hardware SIMD. Anything else (other devices, half/bfloat16 or other dtypes) goes through libtorch's ops.
    /// </summary>
    internal static bool Handles(Tensor stacked) =>
        Enabled
        && Vector.IsHardwareAccelerated
        && stacked.device_type == DeviceType.CPU
        && (stacked.dtype == ScalarType.Float32 || stacked.dtype == ScalarType.Float64)
        && stacked.is_contiguous()
        && stacked.numel() > 0;

    /// <summary>
    /// Prepares a merge of <paramref name="stacked"/> [T, n] (contiguous, as <see cref="Handles"/> accepts) with routing
    /// R [B, T] and an optional base W (n elements); R and W are made contiguous (copies in the current dispose scope only if
    /// they were not), and must already have <paramref name="stacked"/>'s dtype and device.
    /// </summary>
    internal static Merge Prepare(Tensor stacked, Tensor routing, Tensor? weight)
    {
        long n = stacked.shape[1];
        if (routing.dtype != stacked.dtype || routing.device_type != DeviceType.CPU || routing.dim() != 2 || routing.shape[1] != stacked.shape[0])
        {
            throw new ArgumentException($"The routing must be a [B, {stacked.shape[0]}] {stacked.dtype} CPU tensor; got [{string.Join(", ", routing.shape)}] {routing.dtype}.", nameof(routing));
        }

        var r = routing.contiguous();
        var w = weight?.contiguous();
        if (w is not null && (w.numel() != n || w.dtype != stacked.dtype || w.device_type != DeviceType.CPU))
        {
            throw new ArgumentException($"The base weight must be a {stacked.dtype} CPU tensor of {n} elements; got {w.numel()} {w.dtype}.", nameof(weight));
        }

        return new Merge(stacked, r, w, checked((int)r.shape[0]), checked((int)stacked.shape[0]), n);
    }

    /// <summary>The address of a contiguous CPU tensor's first element (its storage offset included); the tensor must stay alive.</summary>
    internal static nint Address(Tensor tensor)
    {
        if (tensor.numel() * tensor.ElementSize <= int.MaxValue)
        {
            return (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(tensor.bytes));
        }

        // Tensor.bytes is limited to int.MaxValue bytes: take the address of a one-element view of the first element.
        using var flat = tensor.view(-1);
        using var first = flat.narrow(0, 0, 1);
        return (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(first.bytes));
    }

    /// <summary>
    /// target[b·targetStride + j] = (weight?[start + j] ?? 0) + Σ_t routing[b·tasks + t]·taus[t·tauStride + start + j] for
    /// j in [0, length), b in [0, batch). Splits [0, length) over up to <paramref name="threads"/> threads.
    /// </summary>
    internal static void Run<T>(nint target, long targetStride, nint weight, nint taus, long tauStride, nint routing, int batch, int tasks, long start, long length, int threads)
        where T : unmanaged, INumber<T>
    {
        long tile = Math.Max(Vector<T>.Count, TileBytes / sizeof(T));
        int parts = (int)Math.Clamp(length / MinElementsPerThread, 1, Math.Max(1, threads));
        if (parts == 1)
        {
            Tiles<T>((T*)target, targetStride, (T*)weight, (T*)taus, tauStride, (T*)routing, batch, tasks, start, 0, length, tile);
            return;
        }

        // Contiguous chunks whose bounds are multiples of the tile (each thread walks its own tiles).
        long tiles = (length + tile - 1) / tile;
        OpenMPTeam.For(parts, part =>
        {
            long from = tiles * part / parts * tile;
            long to = Math.Min(length, tiles * (part + 1) / parts * tile);
            if (to > from)
            {
                Tiles<T>((T*)target, targetStride, (T*)weight, (T*)taus, tauStride, (T*)routing, batch, tasks, start, from, to - from, tile);
            }
        });
    }

    /// <summary>The merge of positions [from, from + count) of the range (relative to <paramref name="start"/>), tile by tile.</summary>
    private static void Tiles<T>(T* target, long targetStride, T* weight, T* taus, long tauStride, T* routing, int batch, int tasks, long start, long from, long count, long tile)
        where T : unmanaged, INumber<T>
    {
        long end = from + count;
        for (long j0 = from; j0 < end; j0 += tile)
        {
            int len = (int)Math.Min(tile, end - j0);
            T* tau = taus + start + j0;
            T* w = weight == null ? null : weight + start + j0;
            for (int b = 0; b < batch; b++)
            {
                MergeTile(target + (b * targetStride) + j0, w, tau, tauStride, routing + ((long)b * tasks), tasks, len);
            }
        }
    }

    /// <summary>dst[j] = (w?[j] ?? 0) + Σ_t r[t]·tau[t·tauStride + j] for j in [0, len): four vector accumulators in registers.</summary>
    private static void MergeTile<T>(T* dst, T* w, T* tau, long tauStride, T* r, int tasks, int len)
        where T : unmanaged, INumber<T>
    {
        int width = Vector<T>.Count;
        int j = 0;
        for (; j <= len - (4 * width); j += 4 * width)
        {
            Vector<T> a0, a1, a2, a3;
            if (w == null)
            {
                a0 = a1 = a2 = a3 = Vector<T>.Zero;
            }
            else
            {
                a0 = Vector.Load(w + j);
                a1 = Vector.Load(w + j + width);
                a2 = Vector.Load(w + j + (2 * width));
                a3 = Vector.Load(w + j + (3 * width));
            }

            T* p = tau + j;
            for (int t = 0; t < tasks; t++, p += tauStride)
            {
                var rt = new Vector<T>(r[t]);
                a0 = MultiplyAdd(Vector.Load(p), rt, a0);
                a1 = MultiplyAdd(Vector.Load(p + width), rt, a1);
                a2 = MultiplyAdd(Vector.Load(p + (2 * width)), rt, a2);
                a3 = MultiplyAdd(Vector.Load(p + (3 * width)), rt, a3);
            }

            Vector.Store(a0, dst + j);
            Vector.Store(a1, dst + j + width);
            Vector.Store(a2, dst + j + (2 * width));
            Vector.Store(a3, dst + j + (3 * width));
        }

        for (; j <= len - width; j += width)
        {
            var a = w == null ? Vector<T>.Zero : Vector.Load(w + j);
            T* p = tau + j;
            for (int t = 0; t < tasks; t++, p += tauStride)
            {
                a = MultiplyAdd(Vector.Load(p), new Vector<T>(r[t]), a);
            }

            Vector.Store(a, dst + j);
        }

        for (; j < len; j++)
        {
            T a = w == null ? T.Zero : w[j];
            T* p = tau + j;
            for (int t = 0; t < tasks; t++, p += tauStride)
            {
                a += r[t] * *p;
            }

            dst[j] = a;
        }
    }

    /// <summary>
    /// sums[b·tasks + t] += Σ_j g[b·gStride + j]·taus[t·tauStride + start + j] for j in [0, length): the routing gradient's
    /// dot products of one block, tile by tile (the T task tiles and the sample's tile stay in L1; each element of g and τ
    /// is read from memory once). Partial sums per tile in T, accumulated in double.
    /// </summary>
    internal static void Dots<T>(double* sums, nint g, long gStride, nint taus, long tauStride, int batch, int tasks, long start, long length)
        where T : unmanaged, INumber<T>
    {
        long tile = Math.Max(Vector<T>.Count, TileBytes / sizeof(T));
        for (long j0 = 0; j0 < length; j0 += tile)
        {
            int len = (int)Math.Min(tile, length - j0);
            T* tau = (T*)taus + start + j0;
            for (int b = 0; b < batch; b++)
            {
                T* gb = (T*)g + (b * gStride) + j0;
                double* row = sums + ((long)b * tasks);
                for (int t = 0; t < tasks; t++)
                {
                    row[t] += double.CreateTruncating(Dot(gb, tau + (t * tauStride), len));
                }
            }
        }
    }

    /// <summary>Σ_j a[j]·b[j] for j in [0, len), four vector accumulators.</summary>
    private static T Dot<T>(T* a, T* b, int len)
        where T : unmanaged, INumber<T>
    {
        int width = Vector<T>.Count;
        var s0 = Vector<T>.Zero;
        var s1 = Vector<T>.Zero;
        var s2 = Vector<T>.Zero;
        var s3 = Vector<T>.Zero;
        int j = 0;
        for (; j <= len - (4 * width); j += 4 * width)
        {
            s0 = MultiplyAdd(Vector.Load(a + j), Vector.Load(b + j), s0);
            s1 = MultiplyAdd(Vector.Load(a + j + width), Vector.Load(b + j + width), s1);
            s2 = MultiplyAdd(Vector.Load(a + j + (2 * width)), Vector.Load(b + j + (2 * width)), s2);
            s3 = MultiplyAdd(Vector.Load(a + j + (3 * width)), Vector.Load(b + j + (3 * width)), s3);
        }

        for (; j <= len - width; j += width)
        {
            s0 = MultiplyAdd(Vector.Load(a + j), Vector.Load(b + j), s0);
        }

        T sum = Vector.Sum((s0 + s1) + (s2 + s3));
        for (; j < len; j++)
        {
            sum += a[j] * b[j];
        }

        return sum;
    }

    private static Vector<T> MultiplyAdd<T>(Vector<T> x, Vector<T> y, Vector<T> addend)
        where T : unmanaged, INumber<T>
    {
        if (typeof(T) == typeof(float))
        {
            return (Vector<T>)(object)Vector.MultiplyAddEstimate((Vector<float>)(object)x, (Vector<float>)(object)y, (Vector<float>)(object)addend);
        }

        if (typeof(T) == typeof(double))
        {
            return (Vector<T>)(object)Vector.MultiplyAddEstimate((Vector<double>)(object)x, (Vector<double>)(object)y, (Vector<double>)(object)addend);
        }

        return (x * y) + addend;
    }

    /// <summary>
    /// One prepared merge: the stacked task vectors [T, n], routing R [B, T] and base W (or none), pinned by reference for
    /// the merge's lifetime (their native memory does not move while the tensors live).
    /// </summary>
    internal sealed class Merge
    {
        private readonly Tensor stacked;
        private readonly Tensor routing;
        private readonly Tensor? weight;

        internal Merge(Tensor stacked, Tensor routing, Tensor? weight, int batch, int tasks, long n)
        {
            this.stacked = stacked;
            this.routing = routing;
            this.weight = weight;
            Batch = batch;
            Tasks = tasks;
            Elements = n;
            Threads = MaxThreads > 0 ? MaxThreads : Math.Max(1, torch.get_num_threads());
        }

        /// <summary>B.</summary>
        internal int Batch { get; }

        /// <summary>T.</summary>
        internal int Tasks { get; }

        /// <summary>n, the elements of one task vector.</summary>
        internal long Elements { get; }

        /// <summary>How many threads the merge of one block may use (libtorch's intra-op thread count; libtorch is idle meanwhile).</summary>
        internal int Threads { get; set; }

        /// <summary>
        /// Adds ⟨g_b, τ_t[start, start + length)⟩ to <paramref name="sums"/>[b·T + t] for every sample and task:
        /// <paramref name="g"/> is a contiguous [B, length] tensor of the storage's dtype on the CPU (the routing gradient
        /// of one block of rows, whose G_b = gy_b[:, rows]ᵀ·x_b).
        /// </summary>
        internal void AddDots(double[] sums, Tensor g, long start, long length)
        {
            ArgumentNullException.ThrowIfNull(sums);
            if (!g.is_contiguous() || g.dtype != stacked.dtype || g.numel() != Batch * length || sums.Length != Batch * Tasks)
            {
                throw new ArgumentException($"The block gradient must be a contiguous [{Batch}, {length}] {stacked.dtype} tensor and the sums [{Batch}·{Tasks}].", nameof(g));
            }

            if (start < 0 || length < 0 || start + length > Elements)
            {
                throw new ArgumentOutOfRangeException(nameof(start), $"Range [{start}, {start + length}) is outside the {Elements} elements of a task vector.");
            }

            if (length == 0 || Batch == 0)
            {
                return;
            }

            nint gp = Address(g), tau = Address(stacked);
            fixed (double* s = sums)
            {
                if (stacked.dtype == ScalarType.Float32)
                {
                    Dots<float>(s, gp, length, tau, Elements, Batch, Tasks, start, length);
                }
                else
                {
                    Dots<double>(s, gp, length, tau, Elements, Batch, Tasks, start, length);
                }
            }

            GC.KeepAlive(g);
            GC.KeepAlive(stacked);
        }

        /// <summary>
        /// Writes W[start + j] + Σ_t R[b, t]·τ_t[start + j] into <paramref name="target"/>[b, j] for j in [0, length):
        /// target must be a contiguous [B, length] tensor of the same dtype on the CPU.
        /// </summary>
        internal void Write(Tensor target, long start, long length)
        {
            if (!target.is_contiguous() || target.dtype != stacked.dtype || target.numel() != Batch * length)
            {
                throw new ArgumentException($"The merge target must be a contiguous [{Batch}, {length}] {stacked.dtype} tensor.", nameof(target));
            }

            if (start < 0 || length < 0 || start + length > Elements)
            {
                throw new ArgumentOutOfRangeException(nameof(start), $"Range [{start}, {start + length}) is outside the {Elements} elements of a task vector.");
            }

            if (length == 0 || Batch == 0)
            {
                return;
            }

            nint t = Address(target), w = weight is null ? 0 : Address(weight), tau = Address(stacked), r = Address(routing);
            if (stacked.dtype == ScalarType.Float32)
            {
                Run<float>(t, length, w, tau, Elements, r, Batch, Tasks, start, length, Threads);
            }
            else
            {
                Run<double>(t, length, w, tau, Elements, r, Batch, Tasks, start, length, Threads);
            }

            GC.KeepAlive(target);
            GC.KeepAlive(weight);
            GC.KeepAlive(stacked);
            GC.KeepAlive(routing);
        }
    }
}
