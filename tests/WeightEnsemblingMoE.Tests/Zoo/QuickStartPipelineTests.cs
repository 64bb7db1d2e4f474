using WeightEnsembling.Clip;
using WeightEnsembling.Experiments;
using WeightEnsembling.Models;
using WeightEnsembling.Tasks;
using WeightEnsembling.Zoo;

namespace WeightEnsembling.Tests.Zoo;

/// <summary>
/// The whole real-data pipeline on a tiny slice: the zoo and data shipped with samples/QuickStart, every method of the
/// benchmark with a few steps. Checks structure and that accuracies are sane; the full run is docs/results, not a test.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class QuickStartPipelineTests
{
    [Test]
    public void MergingBenchmark_ShippedZooEveryMethodFewSteps_GivesOneRowPerMethodAboveChance()
    {
        string assets = Path.Combine(RepositoryRoot(), "samples", "QuickStart", "assets");
        using var pretrained = ClipVisionModel.FromPretrained(Path.Combine(assets, "zoo", "pretrained"));
        var experts = SuiteTask.All.Select(t => ClipVisionModel.FromPretrained(Path.Combine(assets, "zoo", t.Name))).ToList();
        var tasks = SuiteTask.All.Select(t => new BenchmarkTask(
            t.Name,
            t.Load(Path.Combine(assets, "data"), "val", limit: 64),
            t.Load(Path.Combine(assets, "data"), "test", limit: 100),
            TaskHead.Load(Path.Combine(assets, "zoo", "heads", $"{t.Name}.safetensors")))).ToList();
        try
        {
            var options = new MergingBenchmarkOptions { AdaptationSteps = 3, ParetoSteps = 3, DataAwareExamples = 8, LambdaGrid = [0.3, 0.6] };
            var results = MergingBenchmark.Run(pretrained, experts, tasks, options);

            Assert.That(results.Select(r => r.Method), Is.EqualTo(Enum.GetValues<MergingMethod>()));
            foreach (var result in results)
            {
                Assert.That(result.Report.Scores.Select(s => s.Task), Is.EqualTo(SuiteTask.All.Select(t => t.Name)), result.Report.Method);
            }

            // AdaMerging trains one coefficient per task (task-wise), or per task and state-dict tensor (layer-wise); the
            // model it deploys is the plain pre-trained architecture.
            var taskWise = results.Single(r => r.Method == MergingMethod.AdaMergingTaskWise).Parameters!;
            var layerWise = results.Single(r => r.Method == MergingMethod.AdaMergingLayerWise).Parameters!;
            Assert.That(taskWise.Trainable, Is.EqualTo(SuiteTask.All.Count));
            Assert.That(layerWise.Trainable, Is.EqualTo(SuiteTask.All.Count * pretrained.state_dict().Count));
            Assert.That(taskWise.Total, Is.EqualTo(ParameterCount.Of(pretrained).Total));

            // Ten classes per task: chance is 10%. The fine-tuned experts on their own tasks must be far above it, and
            // every merged model above it on average.
            Assert.That(results.Single(r => r.Method == MergingMethod.Individual).Report.AverageAccuracy, Is.GreaterThan(0.6));
            Assert.That(results.Where(r => r.Method != MergingMethod.Pretrained).Select(r => r.Report.AverageAccuracy), Has.All.GreaterThan(0.2));
        }
        finally
        {
            experts.ForEach(e => e.Dispose());
            tasks.ForEach(t => { t.Validation.Dispose(); t.Test.Dispose(); t.Head.Dispose(); });
        }
    }

    internal static string RepositoryRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "WeightEnsemblingMoE.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new InvalidOperationException("The repository root (WeightEnsemblingMoE.sln) was not found.");
    }
}
