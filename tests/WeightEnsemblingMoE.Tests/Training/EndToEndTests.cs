using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;

namespace WeightEnsembling.Tests.Training;

[TestFixture, NonParallelizable]
public sealed class EndToEndTests
{
    [Test]
    public void Adapt_OnLearnableTasks_WemoeBeatsTaskArithmetic()
    {
        using var setup = SyntheticTasks.Create();
        var experts = setup.Experts.Select(e => (IReadOnlyDictionary<string, TorchSharp.torch.Tensor>)e.state_dict()).ToList();
        using var taskArithmetic = TinyClip.WithWeights(StateDictMerging.TaskArithmetic(setup.Pretrained.state_dict(), experts, 0.3));
        var arithmeticReport = ModelEvaluator.Evaluate("Task Arithmetic", taskArithmetic, setup.Tasks);
        for (int k = 0; k < setup.Experts.Length; k++)
        {
            var expertReport = ModelEvaluator.Evaluate($"expert{k}", setup.Experts[k], setup.Tasks);
            TestContext.Out.WriteLine(expertReport.ToPlainText());
        }

        using var upscaled = ModelUpscaler.For(setup.Pretrained).WithExperts(setup.Experts)
            .WithTargets(UpscaleTargets.MlpAndAttention).WithRouterDepth(2).Build();
        var adaptable = upscaled;
        var before = ModelEvaluator.Evaluate("WEMoE (untrained)", adaptable, setup.Tasks);
        var result = new AdaptationTrainer().Adapt(adaptable, setup.Tasks, new AdaptationOptions { LearningRate = 3e-3, Steps = 200, BatchSize = 16 });
        var after = ModelEvaluator.Evaluate("WEMoE", adaptable, setup.Tasks);
        TestContext.Out.WriteLine(EvaluationReport.ToPlainText([arithmeticReport, before, after]));
        TestContext.Out.WriteLine(string.Join(", ", result.FinalLosses));
        Assert.That(after.AverageAccuracy, Is.GreaterThan(arithmeticReport.AverageAccuracy + 0.1));
    }
}
