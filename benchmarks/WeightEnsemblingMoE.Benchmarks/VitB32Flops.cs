namespace WeightEnsembling.Benchmarks;

/// <summary>
/// GEMM-class FLOP counts (2 per multiply-add) of the ViT-B/32 workloads of <see cref="FlopRateBenchmarks"/>, by formula.
/// Counted: matmuls, the patch convolution (a GEMM), the attention scores q·kᵀ and context p·v, the routers and the
/// batch-reduce merge θ_0 + Σ_t r_t τ_t ([T]·[T, S]). Not counted (memory-bound, O(elements)): layer norms, softmax,
/// activations, residual adds, bias adds, the entropy and Adam. Sizes: B images, N = 50 tokens (49 patches + class),
/// D = 768, F = 3072, L = 12 layers, heads × head width = D, patch K = 3·32·32 = 3072, projection 512, T = 8 experts,
/// router depth 2 (Linear(D, D), ReLU, Linear(D, T)), S = 2·D·F + D + F merged MLP elements per layer.
/// </summary>
internal static class VitB32Flops
{
    public const double N = 50, Patches = 49, D = 768, F = 3072, L = 12, K = 3 * 32 * 32, Projection = 512, T = VitB32.Experts;

    /// <summary>The reference GEMM [B·N, D]·[D, F] at B = 16 (the shape of one fc1).</summary>
    public const double GemmRows = 16 * N;

    /// <summary>2·(B·N)·D·F.</summary>
    public static double Gemm => 2 * GemmRows * D * F;

    /// <summary>Patch convolution: 2·(B·49)·K·D.</summary>
    public static double PatchEmbedding(double b) => 2 * b * Patches * K * D;

    /// <summary>q, k, v, out projections of one layer: 4 · 2·(B·N)·D².</summary>
    public static double Projections(double b) => 8 * b * N * D * D;

    /// <summary>Scores q·kᵀ and context p·v of one layer, all heads: 2 · 2·B·N²·D.</summary>
    public static double AttentionCore(double b) => 4 * b * N * N * D;

    /// <summary>fc1 and fc2 of one layer: 2 · 2·(B·N)·D·F.</summary>
    public static double Mlp(double b) => 4 * b * N * D * F;

    /// <summary>
    /// Dense forward (<c>GetImageFeatures</c>): patch embedding + L·(projections + attention core + MLP) + the visual
    /// projection 2·B·D·512. At B = 16: 141.1 GFLOP.
    /// </summary>
    public static double DenseForward(double b) =>
        PatchEmbedding(b) + (L * (Projections(b) + AttentionCore(b) + Mlp(b))) + (2 * b * D * Projection);

    /// <summary>
    /// Dense forward + backward with every parameter requiring grad: each GEMM's backward is a weight (or second-operand)
    /// gradient and an input gradient, each as costly as the forward GEMM (3× forward in all), except the patch
    /// convolution, whose input (the pixels) needs no gradient (2×). At B = 16: 419.5 GFLOP per batch.
    /// </summary>
    public static double DenseForwardBackward(double b) => (3 * DenseForward(b)) - PatchEmbedding(b);

    /// <summary>Merged elements per layer (fc1, fc2 weights and biases).</summary>
    public static double MergedElements => (2 * D * F) + D + F;

    /// <summary>
    /// One WEMoE TTA batch (batch-reduce routing, every MLP upscaled, only the routers train), what autograd runs:
    /// <para>forward = patch embedding + L·(projections + core + MLP + router 2·(B·N)·D·(D + T) + merge 2·T·S) + visual
    /// projection;</para>
    /// <para>backward, layer 0 (its input and attention need no gradient): router fc1 weight gradient 2·(B·N)·D², router
    /// fc2 weight and input gradients 4·(B·N)·D·T, fc1 and fc2 merged-weight gradients and fc2's input gradient
    /// 3 · 2·(B·N)·D·F, the routing gradient of the merge ⟨∂W, τ_t⟩ 2·T·S;</para>
    /// <para>backward, layers 1..L−1: input gradients of the frozen projections (= their forward), the core's 2× forward,
    /// MLP weight and input gradients (2× forward), router weight and input gradients 2·2·(B·N)·D·(D + T), merge 2·T·S;
    /// the frozen visual projection's input gradient 2·B·D·512. The patch embedding has no backward.</para>
    /// At B = 16: 153.4 GFLOP forward + 244.5 GFLOP backward = 397.9 GFLOP per task batch.
    /// </summary>
    public static double TtaBatch(double b)
    {
        double m = b * N, merge = 2 * T * MergedElements, router = 2 * m * D * (D + T);
        double forward = PatchEmbedding(b) + (L * (Projections(b) + AttentionCore(b) + Mlp(b) + router + merge)) + (2 * b * D * Projection);
        double backward0 = (2 * m * D * D) + (4 * m * D * T) + (3 * 2 * m * D * F) + merge;
        double backwardRest = Projections(b) + (2 * AttentionCore(b)) + (2 * Mlp(b)) + (2 * router) + merge;
        return forward + backward0 + ((L - 1) * backwardRest) + (2 * b * D * Projection);
    }
}
