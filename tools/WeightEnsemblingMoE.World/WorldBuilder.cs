using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Data;
using WeightEnsembling.Images;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using WeightEnsembling.Text;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.World;

/// <summary>
/// Builds the world in stages, each in its own folder under the output with a <c>.stage</c> file holding the SHA-256 of
/// its inputs (its config sections and the hash of the stage before it): <c>pool</c> (the pre-training image-caption
/// pairs), <c>tokenizer</c> (BPE on the pool's captions), <c>pretrained</c> (the tiny CLIP, an HF folder with its
/// tokenizer files; built after <c>data</c>, so a task that cannot be drawn fails before the long pre-training),
/// <c>data</c> (the tasks' images, checked disjoint from the pool), <c>zoo</c> (zero-shot heads,
/// experts, <c>summary.json</c>). The first three do not depend on the tasks, so another task mix reuses the
/// pre-trained model. A stage whose hash matches is skipped; a stage is built in a temporary folder and renamed.
/// </summary>
public sealed class WorldBuilder
{
    private const string Version = "world-3";
    private readonly WorldConfig _config;
    private readonly string _output;
    private readonly NpmPackageCache _cache;
    private readonly Action<string> _log;

    public WorldBuilder(WorldConfig config, string output, string cacheFolder, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentException.ThrowIfNullOrWhiteSpace(output);
        _config = config;
        _output = Path.GetFullPath(output);
        _cache = new NpmPackageCache(cacheFolder);
        _log = log ?? throw new ArgumentNullException(nameof(log));
    }

    /// <summary>The hashes of the stages, by name, once computed.</summary>
    public Dictionary<string, string> Hashes { get; } = [];

    /// <summary>Which stages were built this time (the others were reused).</summary>
    public List<string> Built { get; } = [];

    /// <summary>Runs every stage; returns the zoo's summary.</summary>
    public WorldSummary Build()
    {
        var watch = Stopwatch.StartNew();
        var poolSources = PoolSources();
        string pool = Stage("pool", Hash(Version, _config.Seed, _config.ImageSize, Pinned(poolSources), SourceSpecs(poolSources), _config.Augmentation,
            new { _config.Pretraining.Sources, _config.Pretraining.PoolFraction, _config.Pretraining.Pairs, _config.Pretraining.Captions },
            LocalInputs(poolSources)), folder => _log(WorldData.WritePool(_config, LoadSources(poolSources), folder)));
        string tokenizer = Stage("tokenizer", Hash(Hashes["pool"], _config.Model.VocabSize, _config.Model.ContextLength), WriteTokenizer);
        var taskSources = _config.Tasks.SelectMany(t => t.Sources).Distinct().ToList();
        string data = Stage("data", Hash(Hashes["pool"], Pinned(taskSources), SourceSpecs(taskSources), _config.Augmentation, _config.Tasks, LocalInputs(taskSources)),
            folder => WriteTasks(folder, pool, taskSources));
        string pretrained = Stage("pretrained", Hash(Hashes["tokenizer"], _config.Model, _config.Pretraining.Steps, _config.Pretraining.BatchSize, _config.Pretraining.LearningRate),
            folder => WritePretrained(folder, pool, tokenizer));
        string zoo = Stage("zoo", Hash(Hashes["pretrained"], Hashes["data"], _config.FineTuning), folder => WriteZoo(folder, data, pretrained));
        _log($"world built in {watch.Elapsed.TotalSeconds:F0} s (stages built: {(Built.Count == 0 ? "none" : string.Join(", ", Built))})");
        return JsonSerializer.Deserialize<WorldSummary>(File.ReadAllText(Path.Combine(zoo, "summary.json")))!;
    }

    /// <summary>The SHA-256 of the canonical JSON of the parts, hex.</summary>
    public static string Hash(params object?[] parts) =>
        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\n", parts.Select(WorldConfig.Canonical)))));

    /// <summary>
    /// The image processor of the world's PNGs of <paramref name="size"/> pixels: a resize to that fixed size (a no-op
    /// on the world's own images, and the datasets' guarantee of one size), no crop; CLIP's rescale and normalisation.
    /// </summary>
    public static ClipImageProcessor Processor(int size) =>
        new() { DoResize = true, ShortestEdge = null, ResizeHeight = size, ResizeWidth = size, DoCenterCrop = false };

    private string Stage(string name, string hash, Action<string> build)
    {
        Hashes[name] = hash;
        string folder = Path.Combine(_output, name);
        string marker = Path.Combine(folder, ".stage");
        if (File.Exists(marker) && File.ReadAllText(marker) == hash)
        {
            _log($"{name}: up to date ({hash[..12]}), skipped");
            return folder;
        }

        var watch = Stopwatch.StartNew();
        string temp = folder + ".tmp";
        if (Directory.Exists(temp))
        {
            Directory.Delete(temp, true);
        }

        Directory.CreateDirectory(temp);
        build(temp);
        File.WriteAllText(Path.Combine(temp, ".stage"), hash);
        if (Directory.Exists(folder))
        {
            Directory.Delete(folder, true);
        }

        Directory.Move(temp, folder);
        Built.Add(name);
        _log($"{name}: built in {watch.Elapsed.TotalSeconds:F0} s ({hash[..12]})");
        return folder;
    }

    /// <summary>
    /// What the data reads besides the pinned packages: the SHA-256 of each idx file and of each local package folder's
    /// files, and the fonts fc-list gives for the fonts sources (file, size), so a changed input rebuilds the data.
    /// </summary>
    private List<string> LocalInputs(IEnumerable<string> names)
    {
        var inputs = new List<string>();
        foreach (var (name, source) in _config.Sources.Where(s => names.Contains(s.Key)).OrderBy(s => s.Key, StringComparer.Ordinal))
        {
            var files = source.Kind switch
            {
                "idx" => source.Images.Concat(source.Labels).Select(_config.Resolve).ToList(),
                "fonts" => WorldSources.ListFonts().Where(f => source.Families.Contains(f.Family)).Select(f => f.File).Order(StringComparer.Ordinal).ToList(),
                _ => _config.Packages.SingleOrDefault(p => p.Name == source.Package)?.Path is { } local
                    ? Directory.GetFiles(_config.Resolve(local), "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList()
                    : [],
            };
            foreach (string file in files)
            {
                using var stream = File.OpenRead(file);
                inputs.Add($"{name}:{Path.GetFileName(file)}:{Convert.ToHexString(SHA256.HashData(stream))}");
            }
        }

        return inputs;
    }

    private string PackageFolder(string name)
    {
        var package = _config.Packages.Single(p => p.Name == name);
        return package.Path is { } local ? _config.Resolve(local) : _cache.Get(package);
    }

    /// <summary>The pool's sources: those listed under <c>pretraining.sources</c>, in that order.</summary>
    private List<string> PoolSources() => _config.Pretraining.Sources.Distinct().ToList();

    /// <summary>The config sections of the named sources (what a stage built from them depends on).</summary>
    private SortedDictionary<string, SourceSpec> SourceSpecs(IEnumerable<string> names) =>
        new(names.Distinct().ToDictionary(n => n, n => _config.Sources[n]), StringComparer.Ordinal);

    /// <summary>The pinned packages the named sources read.</summary>
    private List<NpmPackage> Pinned(IEnumerable<string> names)
    {
        var used = names.Select(n => _config.Sources[n].Package).Where(p => p is not null).ToHashSet();
        return _config.Packages.Where(p => used.Contains(p.Name)).ToList();
    }

    /// <summary>Loads the named sources' items (each cut to its <c>maxItems</c> by a seeded choice).</summary>
    private Dictionary<string, List<WorldItem>> LoadSources(IEnumerable<string> names)
    {
        var sources = new Dictionary<string, List<WorldItem>>();
        foreach (string name in names)
        {
            var items = WorldSources.Load(name, _config.Sources[name], _config, PackageFolder);
            int max = _config.Sources[name].MaxItems;
            sources[name] = max > 0 && items.Count > max
                ? items.OrderBy(i => WorldData.StableSeed(_config.Seed, "max", i.Key)).Take(max).OrderBy(i => i.Key, StringComparer.Ordinal).ToList()
                : items;
            _log($"source {name}: {sources[name].Count} items");
        }

        return sources;
    }

    private void WriteTasks(string folder, string pool, List<string> taskSources)
    {
        foreach (string line in WorldData.WriteTasks(_config, LoadSources(taskSources), WorldData.PoolHashes(pool), folder))
        {
            _log(line);
        }
    }

    /// <summary>
    /// The texts the vocabulary learns from: the pool's captions only (as CLIP's vocabulary was learned on its own
    /// corpus, not on the downstream prompts), so the tokenizer and the pre-trained model do not depend on the tasks.
    /// </summary>
    private static List<string> Texts(string pool) =>
        File.ReadLines(Path.Combine(pool, "captions.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("caption").GetString()!).ToList();

    private void WriteTokenizer(string folder)
    {
        int size = BpeTrainer.Train(Texts(Path.Combine(_output, "pool")), _config.Model.VocabSize, _config.Model.ContextLength, folder);
        _log($"tokenizer: {size} tokens learned on the pool's captions");
    }

    private void WritePretrained(string folder, string pool, string tokenizerFolder)
    {
        torch.manual_seed(_config.Seed);
        var tokenizer = ClipTokenizer.FromPretrained(tokenizerFolder, _config.Model.ContextLength);
        var config = _config.Model.ToClipConfig(_config.ImageSize, tokenizer.VocabSize);
        using var clip = new ClipModel(config);
        var lines = File.ReadLines(Path.Combine(pool, "captions.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        using var images = Processor(_config.ImageSize).Preprocess(lines.Select(l => ImageDecoder.Default.Decode(Path.Combine(pool, l.GetProperty("file").GetString()!))).ToList());
        using var ids = tokenizer.EncodeBatch(lines.Select(l => l.GetProperty("caption").GetString()!).ToList(), out var mask);
        using (mask)
        {
            var losses = WorldTraining.Pretrain(clip, images, ids, mask, _config.Pretraining, _config.Seed, _log);
            clip.SaveTo(folder);
            foreach (string file in Directory.GetFiles(tokenizerFolder).Where(f => !f.EndsWith(".stage", StringComparison.Ordinal)))
            {
                File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
            }

            File.WriteAllText(Path.Combine(folder, "losses.json"), JsonSerializer.Serialize(losses));
        }
    }

    private void WriteZoo(string folder, string data, string pretrainedFolder)
    {
        using var clip = ClipModel.FromPretrained(pretrainedFolder);
        var tokenizer = ClipTokenizer.FromPretrained(pretrainedFolder, _config.Model.ContextLength);
        var rows = new List<WorldTaskResult>();
        foreach (var task in _config.Tasks)
        {
            var classNames = task.Classes.Values.ToList();
            using var head = ZeroShotClassificationHead.FromClassNames(clip, tokenizer, classNames, task.Templates);
            Directory.CreateDirectory(Path.Combine(folder, "heads"));
            head.Save(Path.Combine(folder, "heads", $"{task.Name}.safetensors"));
            using var train = ImageFolderDataset.Open(Path.Combine(data, "tasks", task.Name, "train"), Processor(_config.ImageSize), name: task.Name);
            using var test = ImageFolderDataset.Open(Path.Combine(data, "tasks", task.Name, "test"), Processor(_config.ImageSize), name: task.Name);
            double zeroShot = WorldTraining.Accuracy(clip.VisionModel, head, test);
            using var expert = new ClipVisionModel(clip.Config.VisionConfig);
            StateDict.LoadInto(expert, clip.VisionModel.state_dict());
            torch.manual_seed(WorldData.StableSeed(_config.Seed, "finetune", task.Name));
            var losses = WorldTraining.FineTune(expert, head, train, _config.FineTuning, WorldData.StableSeed(_config.Seed, "batches", task.Name));
            double accuracy = WorldTraining.Accuracy(expert, head, test);
            expert.SaveTo(Path.Combine(folder, "experts", task.Name));
            rows.Add(new WorldTaskResult(task.Name, classNames.Count, 100 * zeroShot, 100 * accuracy, losses.FirstOrDefault(), losses.LastOrDefault()));
            _log(string.Create(CultureInfo.InvariantCulture, $"{task.Name}: zero-shot {100 * zeroShot:F1}%, expert {100 * accuracy:F1}% (loss {losses.FirstOrDefault():F3} → {losses.LastOrDefault():F3})"));
        }

        var pretrainLosses = JsonSerializer.Deserialize<List<float>>(File.ReadAllText(Path.Combine(pretrainedFolder, "losses.json")))!;
        var summary = new WorldSummary(rows, rows.Average(r => r.ZeroShot), rows.Average(r => r.Expert),
            pretrainLosses.FirstOrDefault(), pretrainLosses.Count == 0 ? 0 : pretrainLosses.TakeLast(Math.Max(1, pretrainLosses.Count / 10)).Average());
        File.WriteAllText(Path.Combine(folder, "summary.json"), JsonSerializer.Serialize(summary, new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(folder, "summary.md"), summary.ToMarkdown());
    }
}
