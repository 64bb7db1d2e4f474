using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using WeightEnsembling.Interop;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// The per-sample linear y_b = x_b·(W + Σ_t R[b, t]·τ_t)ᵀ + bias as one managed float32 GEMM whose weight-panel packing
/// does the merge (AVX2 + FMA). Every sample's tokens are first re-laid depth block by depth block (<see cref="DepthFor"/>
/// columns each). Then, super-block of the depth by super-block (<see cref="SuperBlockBytes"/>), panel of 16 output rows
/// by panel, and depth block by depth block: W's and the T task vectors' rows are transposed once into 16-wide panels
/// (about 150 KB at T = 8, kept in L2 across the B samples), four samples' merged panels are computed together as
/// contiguous weighted sums of them (each source vector loaded once for the four), and each is multiplied at once by a
/// register-blocked micro-kernel of 6 or 5 token rows × 16 outputs. No merged weight set ever reaches memory, where the
/// blocked path writes the B merged row blocks out and reads them back through <c>bmm</c> (docs/benchmarks.md). The
/// panel layout and the micro-kernel follow the usual BLIS/GotoBLAS design (broadcast one operand, vector-load the
/// packed other). Output panels are split over libtorch's OpenMP team (<see cref="OpenMPTeam"/>); each output element is
/// computed by one thread in a fixed order, so results depend neither on the thread count nor on the super-block size.
/// </summary>
internal static unsafe class PerSampleGemmKernel
{
    /// <summary>Output columns (W's rows) of one packed panel: two 8-float vectors.</summary>
    internal const int PanelWidth = 16;

    /// <summary>Samples merged together (each source vector loaded once for all of them).</summary>
    private const int MergeGroup = 4;

    /// <summary>Rows of x (tokens) in one micro-kernel call.</summary>
    private const int MicroRows = 6;

    /// <summary>Whether the CPU runs the kernel (x86 with AVX2 and FMA) and it is enabled.</summary>
    internal static bool IsSupported => Enabled && Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Whether storages use the kernel (false: the blocked merge + <c>bmm</c> path; for A/B timings). The default value is true.</summary>
    internal static bool Enabled { get; set; } = true;

    /// <summary>
    /// Bytes of tokens (B·N·span floats) one depth super-block may hold: within it the kernel goes panel by panel, so that
    /// the task vectors' rows are read in pieces of span floats, and every panel re-reads the super-block's tokens, which
    /// must stay in L3 meanwhile. 3 MiB measured best on the benchmark machine (docs/benchmarks.md). Settable for A/B
    /// timings; results do not depend on it. The default value is 3 MiB.
    /// </summary>
    internal static long SuperBlockBytes { get; set; } = 3L << 20;

    /// <summary>
    /// The kernel on tensors: x [B, N, in], routing [B, T], W [out, in] or null, bias [out] or null, all float32 on the CPU
    /// (made contiguous here; copies only if they were not), with the task vectors' panels from <paramref name="source"/>
    /// (whose memory the caller keeps alive). Returns y [B, N, out]; threads as the fused merge's
    /// (<see cref="FusedMergeKernel.MaxThreads"/>, else libtorch's intra-op count).
    /// </summary>
    internal static Tensor Linear<TSource>(TSource source, int tasks, Tensor x, Tensor routing, Tensor? weight, Tensor? bias, long outFeatures)
        where TSource : struct, IPanelSource
    {
        using var scope = NewDisposeScope();
        var xs = x.contiguous();
        var rs = routing.contiguous();
        var w = weight?.contiguous();
        var c = bias?.contiguous();
        var result = empty([x.shape[0], x.shape[1], outFeatures], ScalarType.Float32, x.device);
        int threads = FusedMergeKernel.MaxThreads > 0 ? FusedMergeKernel.MaxThreads : Math.Max(1, torch.get_num_threads());
        Run(
            source,
            (float*)FusedMergeKernel.Address(xs),
            checked((int)x.shape[0]),
            checked((int)x.shape[1]),
            checked((int)x.shape[2]),
            w is null ? null : (float*)FusedMergeKernel.Address(w),
            tasks,
            (float*)FusedMergeKernel.Address(rs),
            c is null ? null : (float*)FusedMergeKernel.Address(c),
            (float*)FusedMergeKernel.Address(result),
            checked((int)outFeatures),
            threads);
        GC.KeepAlive(xs);
        GC.KeepAlive(rs);
        GC.KeepAlive(w);
        GC.KeepAlive(c);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// y[b, n, o] = bias[o] + Σ_k x[b, n, k]·(W[o, k] + Σ_t routing[b, t]·τ_t[o, k]), every operand a contiguous row-major
    /// float32 block: x [B, N, K], W [O, K] (or null: zero), routing [B, T], bias [O] (or null), y [B, N, O] (overwritten);
    /// the task vectors' panels come from <paramref name="source"/> (dense rows, or a sparse storage decoding its mask),
    /// each (task, panel, depth block) asked for once, in increasing depth order per panel (per output row). Output panels
    /// are split over up to <paramref name="threads"/> threads of libtorch's OpenMP team; a temporary copy of x (B·N·K
    /// floats, re-laid depth block by depth block) is allocated for the call.
    /// </summary>
    internal static void Run<TSource>(TSource source, float* x, int batch, int tokens, int inFeatures, float* weight, int tasks, float* routing, float* bias, float* y, int outFeatures, int threads)
        where TSource : struct, IPanelSource
    {
        if (batch == 0 || tokens == 0 || outFeatures == 0)
        {
            return;
        }

        int panels = (outFeatures + PanelWidth - 1) / PanelWidth;
        int parts = Math.Clamp(threads, 1, panels);
        int depthBlock = DepthFor(tasks);

        // Every sample's tokens, depth block by depth block ([blocks][B·N][depth], block d at B·N·k0): each sample's
        // block is contiguous (51 KB at N = 50), where x's own rows, 12 KB apart in fc2, thrashed the TLB. Copied once,
        // shared by the threads.
        long rows = (long)batch * tokens;
        float* xs = (float*)NativeMemory.AlignedAlloc((nuint)(rows * inFeatures * sizeof(float)), 64);
        try
        {
            int copyParts = (int)Math.Clamp(rows / 64, 1, parts);
            OpenMPTeam.For(copyParts, part => Relayout(x, xs, rows * part / copyParts, rows * (part + 1) / copyParts, rows, inFeatures, depthBlock));
            var arguments = new Arguments(xs, batch, tokens, inFeatures, weight, tasks, routing, bias, y, outFeatures);
            if (parts == 1)
            {
                Panels(source, arguments, 0, panels);
            }
            else
            {
                OpenMPTeam.For(parts, part => Panels(source, arguments, panels * part / parts, panels * (part + 1) / parts));
            }
        }
        finally
        {
            NativeMemory.AlignedFree(xs);
        }
    }

    /// <summary>Rows [first, last) of x [rows, K] copied into the depth-block-major layout (block at k0 starts at rows·k0).</summary>
    private static void Relayout(float* x, float* xs, long first, long last, long rows, int inFeatures, int depthBlock)
    {
        for (int k0 = 0; k0 < inFeatures; k0 += depthBlock)
        {
            int depth = Math.Min(depthBlock, inFeatures - k0);
            float* block = xs + (rows * k0);
            for (long row = first; row < last; row++)
            {
                Buffer.MemoryCopy(x + (row * inFeatures) + k0, block + (row * depth), depth * sizeof(float), depth * sizeof(float));
            }
        }
    }

    /// <summary>
    /// Output panels [first, last) of every sample. Depth super-block by super-block (<see cref="SuperBlockBytes"/>), panel
    /// by panel, and within a panel depth block by depth block: W's and the task vectors' rows of the block are packed into
    /// panel layout (transposed, 16 outputs per k), then each sample's panel is merged from them with contiguous vector
    /// streams and multiplied. Within a super-block the task vectors' rows are read in pieces of the super-block's width
    /// (all 768 columns of fc1 at B = 16), which memory streams better than the 1 KB pieces, 3 to 12 KB apart, of a
    /// depth-block-major order; going panel-major over all of K instead made every panel re-read tokens the task vectors'
    /// stream had pushed out of L3 (fc2: 9.8 MB of tokens at B = 16). docs/benchmarks.md has the measurements.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Panels<TSource>(TSource source, Arguments a, int first, int last)
        where TSource : struct, IPanelSource
    {
        int depthBlock = DepthFor(a.Tasks);
        long panelFloats = (long)depthBlock * PanelWidth;

        // One cache line between the packed source panels, so that the T + 1 streams the merge reads in step do not
        // share one L1 set (16 KB apart they would).
        long sourceStride = panelFloats + PanelWidth;
        // Four samples' merged panels, one cache line apart (16 KB apart they would share L1 sets).
        long packedStride = panelFloats + PanelWidth;
        float* packed = (float*)NativeMemory.AlignedAlloc((nuint)(packedStride * MergeGroup * sizeof(float)), 64);
        float* sources = (float*)NativeMemory.AlignedAlloc((nuint)(sourceStride * (a.Tasks + 1) * sizeof(float)), 64);
        float* edge = (float*)NativeMemory.AlignedAlloc((nuint)(PanelWidth * sizeof(float)), 64);
        long rows = (long)a.Batch * a.Tokens;
        // Depth super-blocks whose tokens (B·N·span floats) stay in L3 while every panel of the range reads them.
        int span = (int)Math.Clamp(SuperBlockBytes / (rows * sizeof(float)) / depthBlock, 1, (a.InFeatures + depthBlock - 1) / depthBlock) * depthBlock;
        try
        {
            for (int s0 = 0; s0 < a.InFeatures; s0 += span)
            {
                int sEnd = Math.Min(a.InFeatures, s0 + span);
                for (int panel = first; panel < last; panel++)
                {
                    int o0 = panel * PanelWidth;
                    int width = Math.Min(PanelWidth, a.OutFeatures - o0);
                    for (int k0 = s0; k0 < sEnd; k0 += depthBlock)
                    {
                        int depth = Math.Min(depthBlock, a.InFeatures - k0);
                        bool accumulate = k0 > 0;
                        float* xs = a.X + (rows * k0);

                        long offset = ((long)o0 * a.InFeatures) + k0;
                        float* weightPanel = a.Weight == null ? null : sources + (a.Tasks * sourceStride);
                        for (int t = 0; t < a.Tasks; t++)
                        {
                            source.Pack(t, o0, width, k0, depth, sources + (t * sourceStride));
                        }

                        if (weightPanel != null)
                        {
                            Pack(a.Weight + offset, a.InFeatures, width, depth, weightPanel);
                        }

                        for (int b0 = 0; b0 < a.Batch; b0 += MergeGroup)
                        {
                            int group = Math.Min(MergeGroup, a.Batch - b0);
                            float* routing = a.Routing + ((long)b0 * a.Tasks);
                            if (group == MergeGroup)
                            {
                                Merge4(weightPanel, sources, sourceStride, routing, a.Tasks, depth * PanelWidth, packed, packedStride);
                            }
                            else
                            {
                                for (int g = 0; g < group; g++)
                                {
                                    Merge(weightPanel, sources, sourceStride, routing + ((long)g * a.Tasks), a.Tasks, depth * PanelWidth, packed + (g * packedStride));
                                }
                            }

                            for (int g = 0; g < group; g++)
                            {
                                int b = b0 + g;
                                float* xb = xs + ((long)b * a.Tokens * depth);
                                float* yb = a.Y + ((long)b * a.Tokens * a.OutFeatures) + o0;
                                float* biasPanel = accumulate || a.Bias == null ? null : a.Bias + o0;
                                if (width == PanelWidth)
                                {
                                    Multiply(xb, depth, packed + (g * packedStride), depth, yb, a.OutFeatures, a.Tokens, accumulate, biasPanel);
                                }
                                else
                                {
                                    MultiplyEdge(xb, depth, packed + (g * packedStride), depth, yb, a.OutFeatures, a.Tokens, width, accumulate, biasPanel, edge);
                                }
                            }
                        }
                    }
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(edge);
            NativeMemory.AlignedFree(sources);
            NativeMemory.AlignedFree(packed);
        }
    }

    /// <summary>
    /// The depth block for T tasks: the T + 1 packed source panels (16 floats per k each) stay within about 192 KB of L2,
    /// a multiple of 8 between 32 and 256.
    /// </summary>
    internal static int DepthFor(int tasks) => Math.Clamp(3072 / (tasks + 1) / 8 * 8, 32, 256);

    /// <summary>
    /// dst[k·16 + j] = src[j·ld + k] for k &lt; depth, j &lt; width; zero for j ≥ width: a 16-row block of a row-major
    /// matrix transposed into panel layout, 8 × 8 tiles through registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Pack(float* src, int ld, int width, int depth, float* dst)
    {
        for (int group = 0; group < 2; group++)
        {
            int rows = Math.Clamp(width - (group * 8), 0, 8);
            float* s = src + ((long)group * 8 * ld);
            float* d = dst + (group * 8);
            int k = 0;
            if (rows == 8)
            {
                for (; k + 8 <= depth; k += 8)
                {
                    TransposeTile(s + k, ld, d + (k * PanelWidth));
                }
            }

            for (; k < depth; k++)
            {
                for (int i = 0; i < 8; i++)
                {
                    d[(k * PanelWidth) + i] = i < rows ? s[((long)i * ld) + k] : 0f;
                }
            }
        }
    }

    /// <summary>
    /// <see cref="Merge"/> for four samples at once: dst[g·dstStride + j] = weight[j] (or zero) + Σ_t r[g·tasks + t]·
    /// sources[t·stride + j] for g &lt; 4, each source vector loaded once for the four (a quarter of the L2 reads).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Merge4(float* weight, float* sources, long stride, float* r, int tasks, int count, float* dst, long dstStride)
    {
        float* r1 = r + tasks, r2 = r + (2 * tasks), r3 = r + (3 * tasks);
        float* d1 = dst + dstStride, d2 = dst + (2 * dstStride), d3 = dst + (3 * dstStride);
        for (int j = 0; j < count; j += 16)
        {
            var w0 = weight == null ? Vector256<float>.Zero : Vector256.Load(weight + j);
            var w1 = weight == null ? Vector256<float>.Zero : Vector256.Load(weight + j + 8);
            Vector256<float> a0 = w0, a1 = w1, b0 = w0, b1 = w1, c0 = w0, c1 = w1, e0 = w0, e1 = w1;
            float* p = sources + j;
            for (int t = 0; t < tasks; t++, p += stride)
            {
                var v0 = Vector256.Load(p);
                var v1 = Vector256.Load(p + 8);
                var s = Vector256.Create(r[t]);
                a0 = Fma.MultiplyAdd(s, v0, a0);
                a1 = Fma.MultiplyAdd(s, v1, a1);
                s = Vector256.Create(r1[t]);
                b0 = Fma.MultiplyAdd(s, v0, b0);
                b1 = Fma.MultiplyAdd(s, v1, b1);
                s = Vector256.Create(r2[t]);
                c0 = Fma.MultiplyAdd(s, v0, c0);
                c1 = Fma.MultiplyAdd(s, v1, c1);
                s = Vector256.Create(r3[t]);
                e0 = Fma.MultiplyAdd(s, v0, e0);
                e1 = Fma.MultiplyAdd(s, v1, e1);
            }

            a0.Store(dst + j);
            a1.Store(dst + j + 8);
            b0.Store(d1 + j);
            b1.Store(d1 + j + 8);
            c0.Store(d2 + j);
            c1.Store(d2 + j + 8);
            e0.Store(d3 + j);
            e1.Store(d3 + j + 8);
        }
    }

    /// <summary>
    /// dst = weight (or zero) + Σ_t r[t]·sources[t·stride ..], over <paramref name="count"/> contiguous floats (a multiple of
    /// 16): eight independent accumulator chains (64 floats) so that the FMAs' latency is hidden, then 16 at a time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Merge(float* weight, float* sources, long stride, float* r, int tasks, int count, float* dst)
    {
        int j = 0;
        for (; j + 64 <= count; j += 64)
        {
            Vector256<float> m0, m1, m2, m3, m4, m5, m6, m7;
            if (weight == null)
            {
                m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = Vector256<float>.Zero;
            }
            else
            {
                float* w = weight + j;
                m0 = Vector256.Load(w);
                m1 = Vector256.Load(w + 8);
                m2 = Vector256.Load(w + 16);
                m3 = Vector256.Load(w + 24);
                m4 = Vector256.Load(w + 32);
                m5 = Vector256.Load(w + 40);
                m6 = Vector256.Load(w + 48);
                m7 = Vector256.Load(w + 56);
            }

            float* p = sources + j;
            for (int t = 0; t < tasks; t++, p += stride)
            {
                var s = Vector256.Create(r[t]);
                m0 = Fma.MultiplyAdd(s, Vector256.Load(p), m0);
                m1 = Fma.MultiplyAdd(s, Vector256.Load(p + 8), m1);
                m2 = Fma.MultiplyAdd(s, Vector256.Load(p + 16), m2);
                m3 = Fma.MultiplyAdd(s, Vector256.Load(p + 24), m3);
                m4 = Fma.MultiplyAdd(s, Vector256.Load(p + 32), m4);
                m5 = Fma.MultiplyAdd(s, Vector256.Load(p + 40), m5);
                m6 = Fma.MultiplyAdd(s, Vector256.Load(p + 48), m6);
                m7 = Fma.MultiplyAdd(s, Vector256.Load(p + 56), m7);
            }

            float* d = dst + j;
            m0.Store(d);
            m1.Store(d + 8);
            m2.Store(d + 16);
            m3.Store(d + 24);
            m4.Store(d + 32);
            m5.Store(d + 40);
            m6.Store(d + 48);
            m7.Store(d + 56);
        }

        for (; j < count; j += 16)
        {
            var m0 = weight == null ? Vector256<float>.Zero : Vector256.Load(weight + j);
            var m1 = weight == null ? Vector256<float>.Zero : Vector256.Load(weight + j + 8);
            float* p = sources + j;
            for (int t = 0; t < tasks; t++, p += stride)
            {
                var s = Vector256.Create(r[t]);
                m0 = Fma.MultiplyAdd(s, Vector256.Load(p), m0);
                m1 = Fma.MultiplyAdd(s, Vector256.Load(p + 8), m1);
            }

            m0.Store(dst + j);
            m1.Store(dst + j + 8);
        }
    }

    /// <summary>
    /// All token rows of one sample against one full packed panel: micro-kernels of 6 and 5 rows (N = 6a + 5b where it
    /// can, 50 = 5·6 + 4·5: no slow short kernel for the ViT's token count), then one of 4 to 1 rows for what remains.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Multiply(float* x, int ldx, float* packed, int depth, float* y, int ldy, int tokens, bool accumulate, float* bias)
    {
        int fives = tokens % MicroRows == 0 ? 0 : MicroRows - (tokens % MicroRows);
        if (fives * (MicroRows - 1) > tokens)
        {
            fives = 0;
        }

        int sixes = (tokens - (fives * (MicroRows - 1))) / MicroRows;
        int n = 0;
        for (int i = 0; i < sixes; i++, n += MicroRows)
        {
            Kernel<Rows6>(x + ((long)n * ldx), ldx, packed, depth, y + ((long)n * ldy), ldy, accumulate, bias);
        }

        for (int i = 0; i < fives; i++, n += MicroRows - 1)
        {
            Kernel<Rows5>(x + ((long)n * ldx), ldx, packed, depth, y + ((long)n * ldy), ldy, accumulate, bias);
        }

        float* xr = x + ((long)n * ldx);
        float* yr = y + ((long)n * ldy);
        switch (tokens - n)
        {
            case 4:
                Kernel<Rows4>(xr, ldx, packed, depth, yr, ldy, accumulate, bias);
                break;
            case 3:
                Kernel<Rows3>(xr, ldx, packed, depth, yr, ldy, accumulate, bias);
                break;
            case 2:
                Kernel<Rows2>(xr, ldx, packed, depth, yr, ldy, accumulate, bias);
                break;
            case 1:
                Kernel1(xr, packed, depth, yr, accumulate, bias);
                break;
        }
    }

    /// <summary>A panel narrower than 16 outputs (the last one): each row through a 16-wide scratch row, valid columns copied.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MultiplyEdge(float* x, int ldx, float* packed, int depth, float* y, int ldy, int tokens, int width, bool accumulate, float* bias, float* scratch)
    {
        for (int n = 0; n < tokens; n++)
        {
            float* row = y + ((long)n * ldy);
            for (int j = 0; j < PanelWidth; j++)
            {
                scratch[j] = j < width ? (accumulate ? row[j] : (bias == null ? 0f : bias[j])) : 0f;
            }

            Kernel1(x + ((long)n * ldx), packed, depth, scratch, accumulate: true, bias: null);
            for (int j = 0; j < width; j++)
            {
                row[j] = scratch[j];
            }
        }
    }

    /// <summary>An 8 × 8 tile (8 rows at stride <paramref name="ld"/>, 8 consecutive k) transposed into 8 panel rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransposeTile(float* src, long ld, float* dst)
    {
        var m0 = Vector256.Load(src);
        var m1 = Vector256.Load(src + ld);
        var m2 = Vector256.Load(src + (2 * ld));
        var m3 = Vector256.Load(src + (3 * ld));
        var m4 = Vector256.Load(src + (4 * ld));
        var m5 = Vector256.Load(src + (5 * ld));
        var m6 = Vector256.Load(src + (6 * ld));
        var m7 = Vector256.Load(src + (7 * ld));
        var t0 = Avx.UnpackLow(m0, m1);
        var t1 = Avx.UnpackHigh(m0, m1);
        var t2 = Avx.UnpackLow(m2, m3);
        var t3 = Avx.UnpackHigh(m2, m3);
        var t4 = Avx.UnpackLow(m4, m5);
        var t5 = Avx.UnpackHigh(m4, m5);
        var t6 = Avx.UnpackLow(m6, m7);
        var t7 = Avx.UnpackHigh(m6, m7);
        var u0 = Avx.Shuffle(t0, t2, 0x44);
        var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44);
        var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44);
        var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44);
        var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Permute2x128(u0, u4, 0x20).Store(dst);
        Avx.Permute2x128(u1, u5, 0x20).Store(dst + PanelWidth);
        Avx.Permute2x128(u2, u6, 0x20).Store(dst + (2 * PanelWidth));
        Avx.Permute2x128(u3, u7, 0x20).Store(dst + (3 * PanelWidth));
        Avx.Permute2x128(u0, u4, 0x31).Store(dst + (4 * PanelWidth));
        Avx.Permute2x128(u1, u5, 0x31).Store(dst + (5 * PanelWidth));
        Avx.Permute2x128(u2, u6, 0x31).Store(dst + (6 * PanelWidth));
        Avx.Permute2x128(u3, u7, 0x31).Store(dst + (7 * PanelWidth));
    }

    /// <summary>
    /// y[i, 0..16) (+)= Σ_k x[i, k]·packed[k, 0..16) for the first R = <typeparamref name="TRows"/>.Count (2 to 6) rows i:
    /// 2R accumulators in registers, one broadcast per row and two panel loads per k. Starts from y (accumulate), from
    /// bias, or from zero. R is a JIT-time constant, so each instantiation keeps only its own rows' code.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel<TRows>(float* x, int ldx, float* packed, int depth, float* y, int ldy, bool accumulate, float* bias)
        where TRows : struct, IRows
    {
        int rows = TRows.Count;
        Vector256<float> c00, c01, c10, c11, c20 = default, c21 = default, c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        if (accumulate)
        {
            c00 = Vector256.Load(y);
            c01 = Vector256.Load(y + 8);
            c10 = Vector256.Load(y + ldy);
            c11 = Vector256.Load(y + ldy + 8);
            if (rows > 2)
            {
                c20 = Vector256.Load(y + (2 * ldy));
                c21 = Vector256.Load(y + (2 * ldy) + 8);
            }

            if (rows > 3)
            {
                c30 = Vector256.Load(y + (3 * ldy));
                c31 = Vector256.Load(y + (3 * ldy) + 8);
            }

            if (rows > 4)
            {
                c40 = Vector256.Load(y + (4 * ldy));
                c41 = Vector256.Load(y + (4 * ldy) + 8);
            }

            if (rows > 5)
            {
                c50 = Vector256.Load(y + (5 * ldy));
                c51 = Vector256.Load(y + (5 * ldy) + 8);
            }
        }
        else
        {
            var b0 = bias == null ? Vector256<float>.Zero : Vector256.Load(bias);
            var b1 = bias == null ? Vector256<float>.Zero : Vector256.Load(bias + 8);
            c00 = c10 = c20 = c30 = c40 = c50 = b0;
            c01 = c11 = c21 = c31 = c41 = c51 = b1;
        }

        float* x0 = x, x1 = x + ldx, x2 = x + (2 * ldx), x3 = x + (3 * ldx), x4 = x + (4 * ldx), x5 = x + (5 * ldx);
        float* p = packed;
        for (int k = 0; k < depth; k++, p += PanelWidth)
        {
            var p0 = Vector256.Load(p);
            var p1 = Vector256.Load(p + 8);
            var s = Vector256.Create(x0[k]);
            c00 = Fma.MultiplyAdd(s, p0, c00);
            c01 = Fma.MultiplyAdd(s, p1, c01);
            s = Vector256.Create(x1[k]);
            c10 = Fma.MultiplyAdd(s, p0, c10);
            c11 = Fma.MultiplyAdd(s, p1, c11);
            if (rows > 2)
            {
                s = Vector256.Create(x2[k]);
                c20 = Fma.MultiplyAdd(s, p0, c20);
                c21 = Fma.MultiplyAdd(s, p1, c21);
            }

            if (rows > 3)
            {
                s = Vector256.Create(x3[k]);
                c30 = Fma.MultiplyAdd(s, p0, c30);
                c31 = Fma.MultiplyAdd(s, p1, c31);
            }

            if (rows > 4)
            {
                s = Vector256.Create(x4[k]);
                c40 = Fma.MultiplyAdd(s, p0, c40);
                c41 = Fma.MultiplyAdd(s, p1, c41);
            }

            if (rows > 5)
            {
                s = Vector256.Create(x5[k]);
                c50 = Fma.MultiplyAdd(s, p0, c50);
                c51 = Fma.MultiplyAdd(s, p1, c51);
            }
        }

        c00.Store(y);
        c01.Store(y + 8);
        c10.Store(y + ldy);
        c11.Store(y + ldy + 8);
        if (rows > 2)
        {
            c20.Store(y + (2 * ldy));
            c21.Store(y + (2 * ldy) + 8);
        }

        if (rows > 3)
        {
            c30.Store(y + (3 * ldy));
            c31.Store(y + (3 * ldy) + 8);
        }

        if (rows > 4)
        {
            c40.Store(y + (4 * ldy));
            c41.Store(y + (4 * ldy) + 8);
        }

        if (rows > 5)
        {
            c50.Store(y + (5 * ldy));
            c51.Store(y + (5 * ldy) + 8);
        }
    }

    /// <summary>One row: y[0..16) (+)= Σ_k x[k]·packed[k, 0..16), two accumulators per half to hide the FMA latency.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel1(float* x, float* packed, int depth, float* y, bool accumulate, float* bias)
    {
        Vector256<float> c0, c1;
        if (accumulate)
        {
            c0 = Vector256.Load(y);
            c1 = Vector256.Load(y + 8);
        }
        else
        {
            c0 = bias == null ? Vector256<float>.Zero : Vector256.Load(bias);
            c1 = bias == null ? Vector256<float>.Zero : Vector256.Load(bias + 8);
        }

        var d0 = Vector256<float>.Zero;
        var d1 = Vector256<float>.Zero;
        float* p = packed;
        int k = 0;
        for (; k + 2 <= depth; k += 2, p += 2 * PanelWidth)
        {
            var s = Vector256.Create(x[k]);
            c0 = Fma.MultiplyAdd(s, Vector256.Load(p), c0);
            c1 = Fma.MultiplyAdd(s, Vector256.Load(p + 8), c1);
            var u = Vector256.Create(x[k + 1]);
            d0 = Fma.MultiplyAdd(u, Vector256.Load(p + PanelWidth), d0);
            d1 = Fma.MultiplyAdd(u, Vector256.Load(p + PanelWidth + 8), d1);
        }

        if (k < depth)
        {
            var s = Vector256.Create(x[k]);
            c0 = Fma.MultiplyAdd(s, Vector256.Load(p), c0);
            c1 = Fma.MultiplyAdd(s, Vector256.Load(p + 8), c1);
        }

        (c0 + d0).Store(y);
        (c1 + d1).Store(y + 8);
    }

    /// <summary>A micro-kernel's row count as a type, so that the JIT compiles one kernel per count.</summary>
    private interface IRows
    {
        /// <summary>Rows of x (and y) the kernel handles.</summary>
        static abstract int Count { get; }
    }

    /// <summary>Two rows.</summary>
    private readonly struct Rows2 : IRows
    {
        /// <inheritdoc/>
        public static int Count => 2;
    }

    /// <summary>Three rows.</summary>
    private readonly struct Rows3 : IRows
    {
        /// <inheritdoc/>
        public static int Count => 3;
    }

    /// <summary>Four rows.</summary>
    private readonly struct Rows4 : IRows
    {
        /// <inheritdoc/>
        public static int Count => 4;
    }

    /// <summary>Five rows.</summary>
    private readonly struct Rows5 : IRows
    {
        /// <inheritdoc/>
        public static int Count => 5;
    }

    /// <summary>Six rows.</summary>
    private readonly struct Rows6 : IRows
    {
        /// <inheritdoc/>
        public static int Count => 6;
    }

    /// <summary>Supplies the kernel with the task vectors' rows of one panel, transposed into panel layout.</summary>
    internal interface IPanelSource
    {

        /// <summary>dst[k·16 + j] = τ_task[o0 + j, k0 + k] for k &lt; depth, j &lt; width, zero for j ≥ width (16 floats per k).</summary>
        void Pack(int task, int o0, int width, int k0, int depth, float* dst);
    }

    /// <summary>Dense task vectors [T, O, K], row-major float32: each panel transposed straight from the rows.</summary>
    internal readonly struct DensePanels(float* taus, int outFeatures, int inFeatures) : IPanelSource
    {

        /// <inheritdoc/>
        public void Pack(int task, int o0, int width, int k0, int depth, float* dst) =>
            PerSampleGemmKernel.Pack(taus + (task * (long)outFeatures * inFeatures) + ((long)o0 * inFeatures) + k0, inFeatures, width, depth, dst);
    }

    /// <summary>The operands of one call (pointers into tensors the caller keeps alive).</summary>
    private readonly struct Arguments(float* x, int batch, int tokens, int inFeatures, float* weight, int tasks, float* routing, float* bias, float* y, int outFeatures)
    {
        internal float* X { get; } = x;

        internal int Batch { get; } = batch;

        internal int Tokens { get; } = tokens;

        internal int InFeatures { get; } = inFeatures;

        internal float* Weight { get; } = weight;

        internal int Tasks { get; } = tasks;

        internal float* Routing { get; } = routing;

        internal float* Bias { get; } = bias;

        internal float* Y { get; } = y;

        internal int OutFeatures { get; } = outFeatures;
    }
}
