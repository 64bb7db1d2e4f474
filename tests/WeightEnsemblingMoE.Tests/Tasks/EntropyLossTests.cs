using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Tasks;

[TestFixture, NonParallelizable]
public sealed class EntropyLossTests
{
    [Test]
    public void Compute_UniformLogits_EqualsLogOfClassCount()
    {
        using var scope = NewDisposeScope();
        // p = 1/4 for each of 4 classes: -4 · (1/4) · ln(1/4 + 1e-8) = ln 4 − 4e-8 = 1.38629432.
        var loss = EntropyLoss.Compute(zeros(2, 4));
        Assert.That(loss.item<float>(), Is.EqualTo(1.38629432f).Within(1e-6f));
    }

    [Test]
    public void Compute_HandComputedBatch_AveragesRowEntropies()
    {
        using var scope = NewDisposeScope();
        // Row 0: logits [0, ln 3] → p = [1/4, 3/4]; H = −(0.25 ln 0.25 + 0.75 ln 0.75) = 0.346574 + 0.215762 = 0.562335.
        // Row 1: logits [5, 5] → p = [1/2, 1/2]; H = ln 2 = 0.693147.
        // Mean = (0.562335 + 0.693147) / 2 = 0.627741.
        var logits = tensor(new float[] { 0f, MathF.Log(3f), 5f, 5f }, 2, 2);
        Assert.That(EntropyLoss.Compute(logits).item<float>(), Is.EqualTo(0.627741f).Within(2e-6f));
    }

    [Test]
    public void Compute_RandomLogits_MatchesPyTorch()
    {
        using var scope = NewDisposeScope();
        var fixture = TaskFixtures.Load("entropy.json");
        var logits = TaskFixtures.Tensor(fixture, "logits", "shape");
        float expected = (float)fixture.GetProperty("loss").GetDouble();
        Assert.That(EntropyLoss.Compute(logits).item<float>(), Is.EqualTo(expected).Within(1e-5f));
    }

    [Test]
    public void Compute_Backward_GradientMatchesPyTorch()
    {
        using var scope = NewDisposeScope();
        var fixture = TaskFixtures.Load("entropy.json");
        var logits = TaskFixtures.Tensor(fixture, "logits", "shape").requires_grad_();
        EntropyLoss.Compute(logits).backward();
        Assert.That(logits.grad, Is.Not.Null);
        Assert.That(logits.grad!.data<float>().ToArray(), Is.EqualTo(TaskFixtures.Floats(fixture, "grad")).Within(1e-5f));
    }

    [Test]
    public void Compute_ConfidentPrediction_HasLowerEntropyThanUncertain()
    {
        using var scope = NewDisposeScope();
        float confident = EntropyLoss.Compute(tensor(new float[] { 10f, 0f, 0f }, 1, 3)).item<float>();
        float uncertain = EntropyLoss.Compute(tensor(new float[] { 1f, 0f, 0f }, 1, 3)).item<float>();
        Assert.That(confident, Is.LessThan(uncertain));
    }

    [Test]
    public void Compute_RankThreeLogits_ThrowsNamingLogits()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => EntropyLoss.Compute(zeros(2, 3, 4)));
        Assert.That(ex!.ParamName, Is.EqualTo("logits"));
        Assert.That(ex.Message, Does.Contain("[2, 3, 4]"));
    }
}
