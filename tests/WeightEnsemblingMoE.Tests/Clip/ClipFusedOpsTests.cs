using TorchSharp;
using WeightEnsembling.Clip;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Clip;

/// <summary>
/// Issue 19 item 2: the attention core through libtorch's <c>scaled_dot_product_attention</c> and the quick-GELU with one
/// temporary are the formulas the library computed before (HF's eager attention, <c>x * sigmoid(1.702 x)</c>), values
/// and gradients, with the text tower's causal and padding masks (left padding included: rows whose only allowed keys
/// are padding). The references below are the previous code, written out op by op.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class ClipFusedOpsTests
{
    private const int Width = 32, Heads = 4, Tokens = 7, Batch = 3;

    // The attention exactly as ClipAttention computed it before issue 19 item 2.
    private static Tensor OldAttention(ClipAttention attention, Tensor input, Tensor? mask)
    {
        long batch = input.shape[0], tokens = input.shape[1];
        Tensor Heads4(string name) => attention.GetLinearLayer(name).forward(input)
            .view(batch, tokens, attention.NumHeads, attention.HeadDim).transpose(1, 2);
        var scores = torch.matmul(Heads4("q_proj"), Heads4("k_proj").transpose(-1, -2)) * Math.Pow(attention.HeadDim, -0.5);
        if (mask is not null)
        {
            scores = scores + mask;
        }

        var context = torch.matmul(scores.softmax(-1), Heads4("v_proj")).transpose(1, 2).reshape(batch, tokens, attention.HiddenSize);
        return attention.GetLinearLayer("out_proj").forward(context);
    }

    private static ClipAttention Attention(ScalarType dtype, long seed)
    {
        torch.manual_seed(seed);
        var attention = new ClipAttention(Width, Heads);
        attention.to(dtype);
        return attention;
    }

    // Causal + padding as the text tower builds it; row 1 is left-padded (its first two queries see only padding).
    private static Tensor TextMask(ScalarType dtype)
    {
        using var padding = torch.tensor(new long[,]
        {
            { 1, 1, 1, 1, 1, 1, 1 },
            { 0, 0, 1, 1, 1, 1, 1 },
            { 1, 1, 1, 1, 0, 0, 0 },
        });
        return ClipTextTransformer.BuildAttentionMask(Batch, Tokens, padding, dtype, torch.CPU);
    }

    private static double MaxDifference(Tensor a, Tensor b) => (a - b).abs().max().to(ScalarType.Float64).item<double>();

    [TestCase(false)]
    [TestCase(true)]
    public void Forward_Float64_EqualsEagerFormula(bool masked)
    {
        using var attention = Attention(ScalarType.Float64, 11);
        using var scope = torch.NewDisposeScope();
        var input = torch.randn(Batch, Tokens, Width, dtype: ScalarType.Float64);
        var mask = masked ? TextMask(ScalarType.Float64) : null;

        var fused = attention.forward(input, mask);
        var eager = OldAttention(attention, input, mask);

        Assert.That(MaxDifference(fused, eager), Is.LessThan(1e-12));
        Assert.That(fused.isfinite().all().item<bool>(), Is.True, "left-padded rows stay finite, as in the eager formula");
    }

    [Test]
    public void Forward_Float32WithTextMask_EqualsEagerFormula()
    {
        using var attention = Attention(ScalarType.Float32, 12);
        using var scope = torch.NewDisposeScope();
        var input = torch.randn(Batch, Tokens, Width);
        var mask = TextMask(ScalarType.Float32);

        Assert.That(MaxDifference(attention.forward(input, mask), OldAttention(attention, input, mask)), Is.LessThan(1e-5));
    }

    [Test]
    public void Forward_MaskedKey_HasNoInfluence()
    {
        using var attention = Attention(ScalarType.Float64, 13);
        using var scope = torch.NewDisposeScope();
        var input = torch.randn(Batch, Tokens, Width, dtype: ScalarType.Float64);
        var mask = TextMask(ScalarType.Float64);
        var changed = input.clone();
        changed[2, 5] = torch.randn(Width, dtype: ScalarType.Float64) * 10; // row 2, a padding position

        var before = attention.forward(input, mask);
        var after = attention.forward(changed, mask);

        // Queries 0..4 of row 2 may not attend key 5 (padding and, for 0..4, also in the future).
        Assert.That(MaxDifference(before[2, ..5], after[2, ..5]), Is.LessThan(1e-12));
        Assert.That(MaxDifference(before[2, 5], after[2, 5]), Is.GreaterThan(1e-6));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void Backward_Float64_GradientsEqualEagerFormula(bool masked)
    {
        using var attention = Attention(ScalarType.Float64, 14);
        using var scope = torch.NewDisposeScope();
        var input = torch.randn(Batch, Tokens, Width, dtype: ScalarType.Float64).requires_grad_();
        var mask = masked ? TextMask(ScalarType.Float64) : null;
        var upstream = torch.randn(Batch, Tokens, Width, dtype: ScalarType.Float64);

        (Tensor Input, Tensor[] Parameters) Gradients(Func<Tensor> run)
        {
            attention.zero_grad();
            input.grad?.zero_();
            (run() * upstream).sum().backward();
            return (input.grad!.clone(), attention.parameters().Select(p => p.grad!.clone()).ToArray());
        }

        var fused = Gradients(() => attention.forward(input, mask));
        var eager = Gradients(() => OldAttention(attention, input, mask));

        Assert.That(MaxDifference(fused.Input, eager.Input), Is.LessThan(1e-12));
        Assert.That(fused.Parameters, Has.Length.EqualTo(8));
        for (int i = 0; i < fused.Parameters.Length; i++)
        {
            Assert.That(MaxDifference(fused.Parameters[i], eager.Parameters[i]), Is.LessThan(1e-12), $"parameter {i}");
        }
    }

    [TestCase(ScalarType.Float64)]
    [TestCase(ScalarType.Bool)]
    public void Forward_MaskOfAnotherDtype_ThrowsNamingTheMask(ScalarType maskType)
    {
        using var attention = Attention(ScalarType.Float32, 15);
        using var scope = torch.NewDisposeScope();
        var input = torch.randn(Batch, Tokens, Width);
        var mask = torch.zeros(Batch, 1, Tokens, Tokens, dtype: maskType);

        var error = Assert.Throws<ArgumentException>(() => attention.forward(input, mask));
        Assert.That(error!.ParamName, Is.EqualTo("attentionMask"));
        Assert.That(error.Message, Does.Contain(maskType.ToString()));
    }

    [Test]
    public void Forward_LeftPaddedRowsWithGraph_GradientsEqualEagerFormulaOnAllRows()
    {
        // The fused kernel's backward differs on rows whose every key is masked (the padding queries of row 1); with a
        // mask and a graph the library therefore keeps the eager ops, and every row's gradient is the old formula's.
        using var attention = Attention(ScalarType.Float32, 18);
        using var scope = torch.NewDisposeScope();
        var input = torch.randn(Batch, Tokens, Width).requires_grad_();
        var mask = TextMask(ScalarType.Float32);
        var upstream = torch.zeros(Batch, Tokens, Width);
        upstream[1, ..2] = 1; // only the fully masked rows

        (attention.forward(input, mask) * upstream).sum().backward();
        var library = input.grad!.clone();
        input.grad!.zero_();
        (OldAttention(attention, input, mask) * upstream).sum().backward();

        Assert.That(MaxDifference(library, input.grad!), Is.EqualTo(0));
    }

    [TestCase(0, false)]
    [TestCase(2, false)]
    [TestCase(1, true)]
    public void ScaledDotProductAttention_Float64Gradients_EqualEagerExceptOnFullyMaskedRows(int row, bool differs)
    {
        // Characterises libtorch's kernel (docs/torchsharp-notes.md): with the text mask its gradients equal the eager
        // formula's on every row that has an allowed key (rows 0 and 2), and not on row 1's two padding queries.
        torch.manual_seed(19);
        using var scope = torch.NewDisposeScope();
        var q = torch.randn(Batch, Heads, Tokens, 8, dtype: ScalarType.Float64).requires_grad_();
        var k = torch.randn(Batch, Heads, Tokens, 8, dtype: ScalarType.Float64).requires_grad_();
        var v = torch.randn(Batch, Heads, Tokens, 8, dtype: ScalarType.Float64).requires_grad_();
        var mask = TextMask(ScalarType.Float64);
        var upstream = torch.zeros(Batch, Heads, Tokens, 8, dtype: ScalarType.Float64);
        upstream[row] = torch.randn(Heads, Tokens, 8, dtype: ScalarType.Float64);

        Tensor[] Gradients(Tensor output)
        {
            foreach (var t in new[] { q, k, v })
            {
                t.grad?.zero_();
            }

            (output * upstream).sum().backward();
            return [q.grad!.clone(), k.grad!.clone(), v.grad!.clone()];
        }

        var fused = Gradients(nn.functional.scaled_dot_product_attention(q, k, v, mask));
        var eager = Gradients(ClipAttention.EagerAttention(q, k, v, mask, 8));
        double worst = fused.Zip(eager, MaxDifference).Max();

        Assert.That(worst, differs ? Is.GreaterThan(1e-3) : Is.LessThan(1e-12));
    }

    [Test]
    public void QuickGelu_WithoutGraph_IsBitwiseTheOldFormula()
    {
        torch.manual_seed(16);
        using var scope = torch.NewDisposeScope();
        var input = torch.randn(4, 5, 64) * 4;
        using var noGrad = torch.no_grad();

        var result = ClipMlp.QuickGelu(input);

        Assert.That(result.equal(input * torch.sigmoid(input * 1.702)).all().item<bool>(), Is.True);
        Assert.That(result.Handle, Is.Not.EqualTo(input.Handle));
    }

    [Test]
    public void QuickGelu_WithGraph_ValuesAndGradientEqualTheOldFormula()
    {
        torch.manual_seed(17);
        using var scope = torch.NewDisposeScope();
        var input = (torch.randn(4, 5, 64, dtype: ScalarType.Float64) * 4).requires_grad_();
        var upstream = torch.randn(4, 5, 64, dtype: ScalarType.Float64);
        var copy = input.detach().clone();

        var fused = ClipMlp.QuickGelu(input);
        (fused * upstream).sum().backward();
        var fusedGrad = input.grad!.clone();
        input.grad!.zero_();
        var old = input * torch.sigmoid(input * 1.702);
        (old * upstream).sum().backward();

        Assert.That(fused.equal(old).all().item<bool>(), Is.True);
        Assert.That(MaxDifference(fusedGrad, input.grad!), Is.EqualTo(0));
        Assert.That(input.detach().equal(copy).all().item<bool>(), Is.True, "the input is not modified");
    }
}
