using System.Text.Json;
using WeightEnsembling.Evaluation;

namespace WeightEnsembling.Tests.Evaluation;

[TestFixture, NonParallelizable]
public sealed class EvaluationReportTests
{
    private static EvaluationReport TaskArithmetic() =>
        new("Task Arithmetic", [new TaskScore("SUN397", 0.552), new TaskScore("Cars", 0.5486, 1.25), new TaskScore("MNIST", 0.9745)], TimeSpan.FromSeconds(12.5));

    [Test]
    public void AverageAccuracy_IsMeanOfTasks()
    {
        // (0.552 + 0.5486 + 0.9745) / 3 = 2.0751 / 3 = 0.6917.
        Assert.That(TaskArithmetic().AverageAccuracy, Is.EqualTo(0.6917).Within(1e-12));
    }

    [Test]
    public void ToMarkdown_SingleReport_PercentagesWithOneDecimalAverageLast()
    {
        string expected =
            "| Method | SUN397 | Cars | MNIST | Avg. |\n" +
            "|---|---:|---:|---:|---:|\n" +
            "| Task Arithmetic | 55.2 | 54.9 | 97.5 | 69.2 |\n";
        Assert.That(TaskArithmetic().ToMarkdown(), Is.EqualTo(expected));
    }

    [Test]
    public void ToMarkdown_SeveralReports_UnionOfTasksWithDashForMissing()
    {
        var wemoe = new EvaluationReport("WEMoE", [new TaskScore("SUN397", 0.742), new TaskScore("DTD", 0.652)]);
        string table = EvaluationReport.ToMarkdown([TaskArithmetic(), wemoe]);
        var lines = table.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines[0], Is.EqualTo("| Method | SUN397 | Cars | MNIST | DTD | Avg. |"));
        Assert.That(lines[2], Is.EqualTo("| Task Arithmetic | 55.2 | 54.9 | 97.5 | - | 69.2 |"));
        // WEMoE average over its own tasks: (74.2 + 65.2) / 2 = 69.7.
        Assert.That(lines[3], Is.EqualTo("| WEMoE | 74.2 | - | - | 65.2 | 69.7 |"));
    }

    [Test]
    public void ToPlainText_AlignsColumns()
    {
        var lines = TaskArithmetic().ToPlainText().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(2));
        Assert.That(lines[0].Length, Is.EqualTo(lines[1].Length));
        Assert.That(lines[1], Does.StartWith("Task Arithmetic").And.EndWith("69.2"));
    }

    [Test]
    public void ToJson_RoundTrip_GivesEqualReport()
    {
        var report = TaskArithmetic();
        var back = EvaluationReport.FromJson(report.ToJson());
        Assert.That(back, Is.EqualTo(report));
        Assert.That(back.Scores[1].Loss, Is.EqualTo(1.25));
        Assert.That(back.Elapsed, Is.EqualTo(TimeSpan.FromSeconds(12.5)));
    }

    [Test]
    public void SaveJson_ThenLoadJson_GivesEqualReportAndNoTempFiles()
    {
        string folder = Path.Combine(Path.GetTempPath(), "report-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            string path = Path.Combine(folder, "report.json");
            TaskArithmetic().SaveJson(path);
            Assert.That(EvaluationReport.LoadJson(path), Is.EqualTo(TaskArithmetic()));
            Assert.That(Directory.GetFiles(folder), Has.Length.EqualTo(1));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void FromJson_AccuracyAboveOne_ThrowsNamingAccuracy()
    {
        const string json = """{ "method": "m", "scores": [ { "task": "t", "accuracy": 97.5 } ] }""";
        var ex = Assert.Throws<JsonException>(() => EvaluationReport.FromJson(json));
        Assert.That(ex!.Message, Does.Contain("accuracy").And.Contain("'t'"));
    }

    [Test]
    public void Constructor_DuplicateTask_ThrowsNamingTask()
    {
        var ex = Assert.Throws<ArgumentException>(() => new EvaluationReport("m", [new TaskScore("MNIST", 0.5), new TaskScore("MNIST", 0.6)]));
        Assert.That(ex!.Message, Does.Contain("'MNIST' twice"));
    }

    [Test]
    public void Equals_DifferentAccuracy_IsFalse()
    {
        var other = new EvaluationReport("Task Arithmetic", [new TaskScore("SUN397", 0.553), new TaskScore("Cars", 0.5486, 1.25), new TaskScore("MNIST", 0.9745)], TimeSpan.FromSeconds(12.5));
        Assert.That(other, Is.Not.EqualTo(TaskArithmetic()));
    }
}
