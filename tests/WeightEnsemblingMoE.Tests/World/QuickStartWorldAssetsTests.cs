using System.Text.Json;
using WeightEnsembling.Clip;
using WeightEnsembling.Data;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Images;
using WeightEnsembling.Models;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Zoo;
using WeightEnsembling.Text;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.World;

/// <summary>
/// The world shipped with the QuickStart (samples/QuickStart/assets/world, issue 17 item 8), through the library's public
/// pipeline: the size limit, the licences, every task's split sizes, zero-shot heads built from class names with the
/// shipped text tower and tokenizer, and every expert at least 20 points above the pre-trained model on its own task
/// (premise P1's second half, as the world's build measured it before the float16 export).
/// </summary>
[TestFixture, NonParallelizable]
public sealed class QuickStartWorldAssetsTests
{
    private static readonly string World = Path.Combine(QuickStartPipelineTests.RepositoryRoot(), "samples", "QuickStart", "assets", "world");

    private static readonly string[] TaskNames = ["flag-continent", "glyph-letter", "digits", "uci-digits", "arrow-direction", "icon-weight", "icon-frame", "skin-tone"];

    [Test]
    public void Assets_AreAtMostFifteenMegabytesTogetherWithTheGreySuite_AndNameTheirLicences()
    {
        string assets = Path.GetDirectoryName(World)!;
        long bytes = Directory.EnumerateFiles(assets, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.That(bytes, Is.LessThanOrEqualTo(15_000_000), $"{bytes:N0} bytes shipped in {assets}");
        string readme = File.ReadAllText(Path.Combine(World, "README.md"));
        Assert.That(readme, Does.Contain("CC BY 4.0").And.Contain("MIT").And.Contain("Apache-2.0").And.Contain("Bitstream Vera"));
        Assert.That(Directory.GetDirectories(Path.Combine(World, "tasks")).Select(Path.GetFileName), Is.EquivalentTo(TaskNames));
    }

    [Test]
    public void EveryExpert_BeatsTheZeroShotHeadBuiltFromClassNames_ByTwentyPoints()
    {
        using var scope = NewDisposeScope();
        using var clip = ClipModel.FromPretrained(Path.Combine(World, "pretrained"));
        var tokenizer = ClipTokenizer.FromPretrained(Path.Combine(World, "pretrained"));
        var processor = new ClipImageProcessor { DoResize = true, ShortestEdge = null, ResizeHeight = 32, ResizeWidth = 32, DoCenterCrop = false };
        using var pretrained = new ClipVisionModel(clip.Config.VisionConfig);
        StateDict.LoadInto(pretrained, clip.VisionModel.state_dict());
        pretrained.eval();
        foreach (string name in TaskNames)
        {
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(World, "tasks", name, "task.json")));
            var classNames = json.RootElement.GetProperty("classNames").EnumerateArray().Select(c => c.GetString()!).ToList();
            var templates = json.RootElement.GetProperty("templates").EnumerateArray().Select(c => c.GetString()!).ToList();
            using var head = ZeroShotClassificationHead.FromClassNames(clip, tokenizer, classNames, templates);
            using var validation = ImageFolderDataset.Open(Path.Combine(World, "tasks", name, "val"), processor, name: name);
            using var test = ImageFolderDataset.Open(Path.Combine(World, "tasks", name, "test"), processor, name: name);
            Assert.That((validation.Count, test.Count, test.ClassCount), Is.EqualTo((50L, 100L, classNames.Count)), name);

            using var expert = ClipVisionModel.FromPretrained(Path.Combine(World, "experts", name));
            expert.eval();
            var task = new ClassificationTask(name, test, head);
            double zeroShot = ModelEvaluator.Evaluate("zero-shot", pretrained, [task]).AverageAccuracy;
            double expertAccuracy = ModelEvaluator.Evaluate("expert", expert, [task]).AverageAccuracy;
            Assert.That(expertAccuracy, Is.GreaterThanOrEqualTo(zeroShot + 0.20), $"{name}: expert {expertAccuracy:P1}, zero-shot {zeroShot:P1}");
        }
    }
}
