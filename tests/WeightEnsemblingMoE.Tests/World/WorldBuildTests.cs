using System.Text.Json;
using WeightEnsembling.Data;
using WeightEnsembling.Images;
using WeightEnsembling.Text;
using WeightEnsembling.World;

namespace WeightEnsembling.Tests.World;

/// <summary>Builds the tiny world of Fixtures/World/tiny.yaml once (no network: the slice is committed) and checks each stage's output.</summary>
[TestFixture, NonParallelizable]
public sealed class WorldBuildTests
{
    private string _output = "";
    private WorldConfig _config = null!;
    private WorldSummary _summary = null!;
    private List<string> _log = [];
    private int _threads;

    [OneTimeSetUp]
    public void BuildTinyWorld()
    {
        // One intra-op thread: on a busy 2-core machine OpenMP's second thread makes these tiny models ~20× slower
        // (docs/torchsharp-notes.md). Restored afterwards.
        _threads = TorchSharp.torch.get_num_threads();
        TorchSharp.torch.set_num_threads(1);
        _output = Path.Combine(Path.GetTempPath(), "wemoe-world-" + Guid.NewGuid().ToString("N"));
        _config = WorldConfig.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "World", "tiny.yaml"));
        var builder = new WorldBuilder(_config, _output, Path.Combine(_output, "cache"), _log.Add);
        _summary = builder.Build();
        Assert.That(builder.Built, Is.EqualTo(new[] { "pool", "tokenizer", "data", "pretrained", "zoo" }));
    }

    [OneTimeTearDown]
    public void Delete()
    {
        TorchSharp.torch.set_num_threads(_threads);
        if (Directory.Exists(_output))
        {
            Directory.Delete(_output, true);
        }
    }

    [Test]
    public void Data_TaskSplitsAreImageFoldersWithTheConfiguredSizes()
    {
        using var train = ImageFolderDataset.Open(Path.Combine(_output, "data", "tasks", "icon-style", "train"), WorldBuilder.Processor(16));
        using var test = ImageFolderDataset.Open(Path.Combine(_output, "data", "tasks", "mdi-category", "test"), WorldBuilder.Processor(16));

        Assert.That(train.Count, Is.EqualTo(320));
        Assert.That(train.Classes, Is.EqualTo(new[] { "00-outline", "01-material" }));
        Assert.That(test.Count, Is.EqualTo(32));
        using var batch = train.GetBatch([0, 1]);
        Assert.That(batch.Images.shape, Is.EqualTo(new long[] { 2, 3, 16, 16 }));
    }

    [Test]
    public void Data_PoolIsDisjointFromEveryTaskImageByContentHash()
    {
        string data = Path.Combine(_output, "data");
        var pool = Directory.GetFiles(Path.Combine(_output, "pool", "images")).Select(HashOf).ToHashSet();
        var tasks = Directory.GetFiles(Path.Combine(data, "tasks"), "*.png", SearchOption.AllDirectories).Select(HashOf).ToList();

        Assert.That(pool, Has.Count.GreaterThan(50));
        Assert.That(tasks, Has.Count.EqualTo((320 + 16 + 64) + (64 + 16 + 32)));
        Assert.That(tasks.Where(pool.Contains), Is.Empty);
        // And by item: no caption's item key is a task item (the pool keeps its own share of each source).
        var poolKeys = File.ReadLines(Path.Combine(_output, "pool", "captions.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("key").GetString()).ToHashSet();
        var taskKeys = Directory.GetFiles(Path.Combine(data, "tasks"), "*.jsonl", SearchOption.AllDirectories)
            .SelectMany(File.ReadLines).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("key").GetString()).ToHashSet();
        Assert.That(poolKeys, Has.Count.GreaterThan(10));
        Assert.That(taskKeys, Has.Count.GreaterThan(10));
        Assert.That(taskKeys.Where(poolKeys.Contains), Is.Empty);
    }

    [Test]
    public void Tokenizer_FilesLoadInClipTokenizer_AndRoundTripACaption()
    {
        string folder = Path.Combine(_output, "tokenizer");
        var tokenizer = ClipTokenizer.FromPretrained(folder, 16);
        var vocabulary = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(Path.Combine(folder, "vocab.json")))!;
        var byId = vocabulary.ToDictionary(p => p.Value, p => p.Key);
        var bytes = BpeTrainer.BytesToUnicode().ToDictionary(p => p.Symbol, p => (byte)p.Byte);

        var ids = tokenizer.Encode("An icon of  Weather");
        string text = string.Concat(ids.Skip(1).SkipLast(1).Select(i => byId[i]));
        string decoded = System.Text.Encoding.UTF8.GetString(text.Replace("</w>", " ").Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(w => w.Select(c => bytes[c.ToString()]).Concat(new[] { (byte)' ' })).SelectMany(b => b).ToArray()).Trim();

        Assert.That(tokenizer.VocabSize, Is.EqualTo(vocabulary.Count).And.LessThanOrEqualTo(700));
        Assert.That(ids[0], Is.EqualTo(tokenizer.BosTokenId));
        Assert.That(ids[^1], Is.EqualTo(tokenizer.EosTokenId));
        Assert.That(tokenizer.BosTokenId, Is.EqualTo(vocabulary["<|startoftext|>"]));
        Assert.That(tokenizer.EosTokenId, Is.EqualTo(vocabulary.Count - 1));
        Assert.That(decoded, Is.EqualTo("an icon of weather"));
        // Frequent caption words became single tokens.
        Assert.That(ids, Does.Contain(vocabulary["icon</w>"]));
        Assert.That(File.ReadLines(Path.Combine(folder, "merges.txt")).First(), Is.EqualTo("#version: 0.2"));
    }

    [Test]
    public void Pretraining_LowersTheContrastiveLoss()
    {
        var losses = JsonSerializer.Deserialize<List<float>>(File.ReadAllText(Path.Combine(_output, "pretrained", "losses.json")))!;

        // Chance level of a batch of 32 pairs is ln 32 ≈ 3.47: the loss ends far below it.
        Assert.That(losses, Has.Count.EqualTo(150));
        Assert.That(losses.TakeLast(10).Average(), Is.LessThan(Math.Log(32) - 1.5));
        Assert.That(_summary.PretrainLastLoss, Is.LessThan(_summary.PretrainFirstLoss));
    }

    [Test]
    public void Pretrained_IsAnHfFolderWithItsTokenizer()
    {
        string folder = Path.Combine(_output, "pretrained");
        using var clip = WeightEnsembling.Clip.ClipModel.FromPretrained(folder);
        var tokenizer = ClipTokenizer.FromPretrained(folder);

        Assert.That(clip.Config.TextConfig.VocabSize, Is.EqualTo(tokenizer.VocabSize));
        Assert.That(tokenizer.ContextLength, Is.EqualTo(16));
        Assert.That(clip.Config.VisionConfig.ImageSize, Is.EqualTo(16));
    }

    [Test]
    public void Expert_BeatsZeroShotOnItsTask()
    {
        var style = _summary.Tasks.Single(t => t.Task == "icon-style");

        Assert.That(style.Expert, Is.GreaterThan(style.ZeroShot + 10), string.Join("\n", _log));
        Assert.That(style.LastLoss, Is.LessThan(style.FirstLoss));
        Assert.That(File.Exists(Path.Combine(_output, "zoo", "experts", "icon-style", "config.json")), Is.True);
        Assert.That(File.Exists(Path.Combine(_output, "zoo", "heads", "mdi-category.safetensors")), Is.True);
    }

    [Test]
    public void ExportQuickStart_WritesLoadableFloatSixteenModels_AndReplacesTheFolder()
    {
        string output = Path.Combine(_output, "quickstart-assets");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "stale.txt"), "from an earlier export");

        var log = QuickStartExport.Export(_config, _output, output);

        Assert.That(File.Exists(Path.Combine(output, "stale.txt")), Is.False, "the folder is replaced, not merged");
        Assert.That(Directory.Exists(output + ".tmp"), Is.False);
        Assert.That(File.ReadAllText(Path.Combine(output, "README.md")), Does.Contain("CC BY 4.0"));
        using var clip = WeightEnsembling.Clip.ClipModel.FromPretrained(Path.Combine(output, "pretrained"));
        using var original = WeightEnsembling.Clip.ClipModel.FromPretrained(Path.Combine(_output, "pretrained"));
        var tokenizer = ClipTokenizer.FromPretrained(Path.Combine(output, "pretrained"));
        Assert.That(tokenizer.VocabSize, Is.EqualTo(clip.Config.TextConfig.VocabSize));
        var exported = clip.state_dict();
        foreach (var (key, value) in original.state_dict())
        {
            var rounded = value.to(TorchSharp.torch.ScalarType.Float16).to(TorchSharp.torch.ScalarType.Float32);
            Assert.That(exported[key].eq(rounded).all().item<bool>(), Is.True, $"pretrained {key} is the float16 rounding of the world's");
        }

        foreach (var task in _config.Tasks)
        {
            string expertFolder = Path.Combine(output, "experts", task.Name);
            using var expert = WeightEnsembling.Clip.ClipVisionModel.FromPretrained(expertFolder);
            using var source = WeightEnsembling.Clip.ClipVisionModel.FromPretrained(Path.Combine(_output, "zoo", "experts", task.Name));
            Assert.That(File.ReadAllText(Path.Combine(expertFolder, "config.json")), Does.Contain("float16"));
            var weights = source.state_dict();
            foreach (var (key, value) in expert.state_dict())
            {
                var rounded = weights[key].to(TorchSharp.torch.ScalarType.Float16).to(TorchSharp.torch.ScalarType.Float32);
                Assert.That(value.eq(rounded).all().item<bool>(), Is.True, $"{task.Name} {key} is the float16 rounding of the expert");
            }

            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "tasks", task.Name, "task.json")));
            Assert.That(json.RootElement.GetProperty("classNames").GetArrayLength(), Is.EqualTo(task.Classes.Count));
            foreach (string split in new[] { "val", "test" })
            {
                using var data = ImageFolderDataset.Open(Path.Combine(output, "tasks", task.Name, split), WorldBuilder.Processor(_config.ImageSize), name: task.Name);
                Assert.That(data.Count, Is.EqualTo(split == "val" ? task.Val : task.Test));
            }

            Assert.That(Directory.Exists(Path.Combine(output, "tasks", task.Name, "train")), Is.False, "training images are not shipped");
        }

        Assert.That(log[^1], Does.StartWith("exported to"));
    }

    [Test]
    public void Rebuild_WithTheSameConfig_SkipsEveryStage_AndAChangedSectionRebuildsFromThere()
    {
        var again = new WorldBuilder(_config, _output, Path.Combine(_output, "cache"), _ => { });
        again.Build();
        Assert.That(again.Built, Is.Empty);

        _config.FineTuning.Steps = 5;
        try
        {
            var changed = new WorldBuilder(_config, _output, Path.Combine(_output, "cache"), _ => { });
            changed.Build();
            Assert.That(changed.Built, Is.EqualTo(new[] { "zoo" }));
        }
        finally
        {
            _config.FineTuning.Steps = 120;
        }
    }

    [Test]
    public void Rebuild_AfterALocalPackageFileChanged_RebuildsTheData()
    {
        using var copy = new WeightEnsembling.Tests.SafeTensors.TempFolder();
        string source = Path.Combine(AppContext.BaseDirectory, "Fixtures", "World");
        foreach (string file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(copy.Path, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }

        var config = WorldConfig.Load(copy.File("tiny.yaml"));
        config.Pretraining.Steps = 2;
        config.FineTuning.Steps = 2;
        string output = copy.File("out");
        new WorldBuilder(config, output, copy.File("cache"), _ => { }).Build();
        File.AppendAllText(Path.Combine(copy.Path, "tabler", "package.json"), "\n");

        var again = new WorldBuilder(config, output, copy.File("cache"), _ => { });
        again.Build();

        Assert.That(again.Built, Is.EqualTo(new[] { "pool", "tokenizer", "data", "pretrained", "zoo" }));
    }

    [Test]
    public void Rebuild_AnotherTaskMix_ReusesThePoolTokenizerAndPretrainedModel()
    {
        var task = _config.Tasks.Single(t => t.Name == "mdi-category");
        int test = task.Test;
        task.Test = 24;
        try
        {
            var changed = new WorldBuilder(_config, _output, Path.Combine(_output, "cache"), _ => { });
            changed.Build();
            Assert.That(changed.Built, Is.EqualTo(new[] { "data", "zoo" }));
            Assert.That(Directory.GetFiles(Path.Combine(_output, "data", "tasks", "mdi-category", "test"), "*.png", SearchOption.AllDirectories), Has.Length.EqualTo(24));
        }
        finally
        {
            task.Test = test;
            new WorldBuilder(_config, _output, Path.Combine(_output, "cache"), _ => { }).Build();
        }
    }

    [Test]
    public void Premises_AreMeasuredOnTheBuiltWorldAndWrittenAsJson()
    {
        using var zoo = WorldZoo.Open(_config, _output);
        var options = new WeightEnsembling.Experiments.MergingBenchmarkOptions { LambdaGrid = [0.3, 1.0] };

        var report = WorldPremises.Measure(zoo, options, _ => { });

        Assert.That(report.Premises.Select(p => p.Premise), Is.EqualTo(new[] { "P1a", "P1b", "P2a", "P2b", "P3", "P4" }));
        Assert.That(report.Tasks, Is.EqualTo(_config.Tasks.Select(t => t.Name)));
        Assert.That(report.ProbeAccuracy, Has.Count.EqualTo(zoo.Pretrained.Layers.Count));
        Assert.That(report.TaskArithmeticLambda, Is.AnyOf(0.3, 1.0));
        // The zero-shot and expert figures are the zoo stage's own (same model, heads and test split).
        Assert.That(report.ZeroShot.Average(), Is.EqualTo(_summary.ZeroShotAverage).Within(1e-6));
        Assert.That(report.Individual.Average(), Is.EqualTo(_summary.ExpertAverage).Within(1e-6));
        using var json = JsonDocument.Parse(report.ToJson());
        Assert.That(json.RootElement.GetProperty("premises").GetArrayLength(), Is.EqualTo(6));
        Assert.That(report.ToMarkdown(), Does.Contain("| P4 |").And.Contain("Where the oracle's gap lies"));
        Assert.That(report.OracleAttribution.Keys, Is.EqualTo(new[] { "attention", "layer norms", "embeddings and pre-norm", "post-norm and projection" }));
        Assert.That(report.OracleAttribution.Values.SelectMany(v => v), Has.All.InRange(0.0, 100.0));
        Assert.That(report.OracleAttribution.Values.Select(v => v.Count), Has.All.EqualTo(_config.Tasks.Count));
    }

    [Test]
    public void Benchmark_RunsTheMethodsAndBothWemoeRecipes_AndWritesARowPerMethod()
    {
        using var zoo = WorldZoo.Open(_config, _output);
        var methods = new[] { WeightEnsembling.Experiments.MergingMethod.Pretrained, WeightEnsembling.Experiments.MergingMethod.Wemoe };

        var rows = WorldExperiment.Run(zoo, steps: 2, methods, recipes: true, _ => { });

        // Two methods, then WEMoE (2-layer) under FusionBench's and the original recipe, each from λ = 0.3 and from task arithmetic's λ.
        Assert.That(rows.Select(r => (string)r["method"]!).ToList(), Has.Count.EqualTo(6));
        Assert.That(rows.Skip(2).Select(r => (string)r["method"]!), Has.All.StartsWith("WEMoE (2-layer), "));
        Assert.That(rows.Count(r => ((string)r["detail"]!).Contains("per-sample routing in training", StringComparison.Ordinal)), Is.EqualTo(2));
        Assert.That(rows.Count(r => ((string)r["detail"]!).Contains("cosine over 1000", StringComparison.Ordinal)), Is.EqualTo(2));
        Assert.That(rows.Count(r => ((string)r["detail"]!).Contains("pre-trained projection", StringComparison.Ordinal)), Is.EqualTo(3));
        using var json = JsonDocument.Parse(WorldExperiment.ToJson(rows));
        foreach (var row in json.RootElement.EnumerateArray())
        {
            var tasks = row.GetProperty("tasks").EnumerateObject().Select(t => t.Value.GetDouble()).ToList();
            Assert.That(tasks, Has.Count.EqualTo(_config.Tasks.Count));
            Assert.That(row.GetProperty("average").GetDouble(), Is.EqualTo(tasks.Average()).Within(0.01));
        }

        Assert.That(WorldExperiment.ToMarkdown(rows, _config.Tasks.Select(t => t.Name).ToList()), Does.Contain("original recipe"));
    }

    [Test]
    public void Safeguards_RunWemoeOncePerVariant_AndRecordTheSafeguardsAndTheRouting()
    {
        using var zoo = WorldZoo.Open(_config, _output);

        var rows = WorldExperiment.RunSafeguards(zoo, steps: 2, _ => { });

        var details = rows.Select(r => (string)r["detail"]!).ToList();
        Assert.That(rows.Select(r => (string)r["method"]!), Is.EqualTo(WeightEnsembling.Experiments.SafeguardStudy.Variants.Select(v => $"WEMoE (2-layer), {v.Label}")));
        Assert.That(details, Has.All.Contain("test routing: mean Σr").And.All.Contain("pre-trained projection"));
        Assert.That(details[0], Does.Not.Contain("anchor").And.Not.Contain("diversity").And.Not.Contain("early stopping"));
        Assert.That(details[2], Does.Contain("anchor 100"));
        Assert.That(details[3], Does.Contain("diversity 1"));
        Assert.That(details[4], Does.Contain("early stopping every 50 steps, kept step"));
        Assert.That(details[5], Does.Contain("anchor 100, diversity 1, early stopping"));
    }

    [Test]
    public void Probe_SeparatesTasksWhoseImagesDifferAndNotIdenticalOnes()
    {
        using var zoo = WorldZoo.Open(_config, _output);
        var head = zoo.Tasks[0].Head;
        using var dark = TorchSharp.torch.full(40, 3, 16, 16, -1.5f);
        using var light = TorchSharp.torch.full(40, 3, 16, 16, 1.5f);
        using var labels = TorchSharp.torch.zeros(40, TorchSharp.torch.ScalarType.Int64);
        var darkSet = new WeightEnsembling.Tasks.InMemoryTaskDataset("dark", dark, labels, 2);
        var lightSet = new WeightEnsembling.Tasks.InMemoryTaskDataset("light", light, labels, 2);
        var otherDark = new WeightEnsembling.Tasks.InMemoryTaskDataset("dark too", dark, labels, 2);
        var different = new[] { new WeightEnsembling.Experiments.BenchmarkTask("a", darkSet, darkSet, head), new("b", lightSet, lightSet, head) };
        var same = new[] { new WeightEnsembling.Experiments.BenchmarkTask("a", darkSet, darkSet, head), new("b", otherDark, otherDark, head) };

        var separated = WorldPremises.ProbeLayers(zoo.Pretrained, different, 16);
        var confused = WorldPremises.ProbeLayers(zoo.Pretrained, same, 16);

        Assert.That(separated, Has.All.EqualTo(100.0));
        Assert.That(confused, Has.All.LessThanOrEqualTo(50.0));
        darkSet.Dispose();
        lightSet.Dispose();
        otherDark.Dispose();
    }

    private static string HashOf(string png) => Disjointness.Hash(ImageDecoder.Default.Decode(png));
}
