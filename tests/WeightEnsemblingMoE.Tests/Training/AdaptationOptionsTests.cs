using System.Text.Json;
using WeightEnsembling.Moe;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;

namespace WeightEnsembling.Tests.Training;

/// <summary>The cosine schedule against PyTorch's CosineAnnealingLR (tools/fixtures/cosine_schedule_reference.py).</summary>
[TestFixture]
public sealed class AdaptationOptionsTests
{
    [Test]
    public void LearningRateAt_CosineScheduleWithOwnLength_MatchesPyTorchCosineAnnealingLR()
    {
        var path = Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Schedules", "cosine.json");
        using var document = JsonDocument.Parse(File.ReadAllText(path));
        int checkedCases = 0;
        foreach (var item in document.RootElement.GetProperty("cases").EnumerateArray())
        {
            int steps = item.GetProperty("steps").GetInt32();
            int tMax = item.GetProperty("t_max").GetInt32();
            var options = new AdaptationOptions
            {
                LearningRate = item.GetProperty("learning_rate").GetDouble(),
                MinLearningRateRatio = item.GetProperty("min_ratio").GetDouble(),
                CosineSchedule = true,
                Steps = steps,
                CosineSteps = tMax == steps ? null : tMax,
            };
            options.Validate();
            var expected = item.GetProperty("rates").EnumerateArray().Select(r => r.GetDouble()).ToArray();
            Assert.That(expected, Has.Length.EqualTo(steps));
            for (int step = 0; step < steps; step++)
            {
                Assert.That(options.LearningRateAt(step), Is.EqualTo(expected[step]).Within(1e-9).Percent, $"T_max {tMax}, step {step}");
            }

            checkedCases++;
        }

        Assert.That(checkedCases, Is.EqualTo(3));
    }

    [Test]
    public void Validate_CosineStepsBelowOne_NamesTheOption()
    {
        var options = new AdaptationOptions { CosineSchedule = true, CosineSteps = 0 };
        var e = Assert.Throws<ArgumentOutOfRangeException>(options.Validate);
        Assert.That(e!.ParamName, Is.EqualTo(nameof(AdaptationOptions.CosineSteps)));
    }

    [Test]
    public void SetTraining_PerSampleTrainingRouting_RoutesPerSampleWhileTraining()
    {
        using var pretrained = Upscaling.TinyClip.Pretrained();
        using var expert = Upscaling.TinyClip.Expert(pretrained, 3);
        using var upscaled = Upscaler.Upcycle(pretrained, [expert]);
        upscaled.SetTraining(true);
        Assert.That(upscaled.RoutingMode, Is.EqualTo(RoutingMode.BatchReduce), "FusionBench's recipe by default");
        upscaled.TrainingRoutingMode = RoutingMode.PerSample;
        upscaled.SetTraining(true);
        Assert.That(upscaled.RoutingMode, Is.EqualTo(RoutingMode.PerSample), "the original repository's recipe");
        upscaled.SetTraining(false);
        Assert.That(upscaled.RoutingMode, Is.EqualTo(RoutingMode.PerSample));
    }
}
