using System.Text.Json;
using EndToEnd;

namespace WeightEnsembling.Tests.Samples;

/// <summary>
/// Runs samples/EndToEnd's main path on its shipped assets (so CI covers the sample): a full CLIP folder, an image folder
/// and a parquet file through zero-shot heads, upcycling, adaptation and evaluation. The zero-shot and expert accuracies
/// are checked against those PyTorch computed on the same files when it made them (assets/expected.json, written by
/// tools/fixtures/end_to_end_sample.py with Pillow's decoding and its own preprocessing and model code).
/// </summary>
[TestFixture, NonParallelizable]
public sealed class EndToEndSampleTests
{
    private static string Assets()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "samples", "EndToEnd", "assets");
            if (File.Exists(Path.Combine(dir.FullName, "WeightEnsemblingMoE.sln")) && Directory.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new DirectoryNotFoundException("samples/EndToEnd/assets not found above the test directory.");
    }

    [Test]
    public void MainPath_OnShippedAssets_MatchesPyTorchAccuracies()
    {
        string assets = Assets();
        var log = new StringWriter();

        var result = EndToEndPipeline.Run(assets, log, steps: 10);

        using var expected = JsonDocument.Parse(File.ReadAllText(Path.Combine(assets, "expected.json")));
        var zeroShot = expected.RootElement.GetProperty("zero_shot");
        var experts = expected.RootElement.GetProperty("expert_on_own_task");
        var table = new StringWriter();
        result.PrintTable(table);
        TestContext.Out.WriteLine(log.ToString() + table);

        Assert.That(result.Reports, Has.Count.EqualTo(4));
        Assert.That(result.SkippedImages, Is.Zero);
        const double oneImage = 1.0 / 24 + 1e-9; // 24 test images per task; allow one borderline argmax to differ
        foreach (string task in new[] { "shapes", "digits" })
        {
            Assert.That(result.Reports[0].Scores.Single(s => s.Task == task).Accuracy, Is.EqualTo(zeroShot.GetProperty(task).GetDouble()).Within(oneImage), $"zero-shot {task}");
            Assert.That(result.Reports[1].Scores.Single(s => s.Task == task).Accuracy, Is.EqualTo(experts.GetProperty(task).GetDouble()).Within(oneImage), $"expert {task}");
            Assert.That(result.Reports[3].Scores.Single(s => s.Task == task).Accuracy, Is.InRange(0.0, 1.0));
        }

        Assert.That(table.ToString(), Does.Contain("WEMoE after 10 steps"));
    }
}
