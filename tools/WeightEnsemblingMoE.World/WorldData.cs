using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using WeightEnsembling.Images;

namespace WeightEnsembling.World;

/// <summary>
/// Draws the world's images from the sources and writes them, in two parts built by separate stages: the pre-training
/// pool (<see cref="WritePool"/>: <c>images/NNNNNN.png</c> with <c>captions.jsonl</c>) and the tasks
/// (<see cref="WriteTasks"/>: <c>tasks/TASK/SPLIT/NN-class/NNNNN.png</c>, readable by <see cref="Data.ImageFolderDataset"/>,
/// class folders in class order, with <c>tasks/TASK/task.json</c> (class names, templates) and
/// <c>tasks/TASK/SPLIT.jsonl</c> (each file's item and SHA-256)). Each pool source keeps a seeded share of its items for
/// the pool (<see cref="Partition"/>); tasks use the rest; the tasks' content hashes are checked against the pool's
/// (<see cref="Disjointness"/>). The pool does not depend on the tasks, so another task mix reuses the pre-trained model.
/// </summary>
public static class WorldData
{
    public static readonly string[] Splits = ["train", "val", "test"];

    /// <summary>
    /// Splits one source's items between the pool and the tasks: a seeded shuffle, then the source's pool share
    /// (<see cref="SourceSpec.PoolFraction"/>, else <c>pretraining.poolFraction</c>; none if the source is not a pool source).
    /// </summary>
    public static (List<WorldItem> Pool, List<WorldItem> Tasks) Partition(WorldConfig config, string name, IReadOnlyList<WorldItem> items)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(items);
        var shuffled = Shuffle(items, StableSeed(config.Seed, "source", name));
        double fraction = config.Sources.TryGetValue(name, out var spec) && spec.PoolFraction is { } own ? own : config.Pretraining.PoolFraction;
        int reserved = config.Pretraining.Sources.Contains(name) ? (int)Math.Round(shuffled.Count * fraction) : 0;
        return (shuffled.Take(reserved).ToList(), shuffled.Skip(reserved).ToList());
    }

    /// <summary>
    /// The index of <paramref name="item"/>'s class in <paramref name="task"/>, or -1 if it has none: the class whose key
    /// equals the item's <c>label</c> attribute, or with <c>label: name</c>, the first class whose key (a regular
    /// expression) matches the item's name.
    /// </summary>
    public static int ClassOf(TaskSpec task, WorldItem item)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(item);
        int index = 0;
        foreach (string key in task.Classes.Keys)
        {
            bool match = task.Label == "name"
                ? Regex.IsMatch(item.Name, key, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1))
                : item.Attributes.TryGetValue(task.Label, out string? value) && value == key;
            if (match)
            {
                return index;
            }

            index++;
        }

        return -1;
    }

    /// <summary>
    /// Writes the tasks' images into <paramref name="output"/> from the task share of each source and checks them against
    /// the pool's content hashes (<paramref name="poolHashes"/>: hash → file); returns a one-line summary per task.
    /// </summary>
    public static List<string> WriteTasks(WorldConfig config, IReadOnlyDictionary<string, List<WorldItem>> sources, IReadOnlyDictionary<string, string> poolHashes, string output)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentNullException.ThrowIfNull(poolHashes);
        var log = new List<string>();
        var taskItems = sources.ToDictionary(s => s.Key, s => Partition(config, s.Key, s.Value).Tasks);
        var taskHashes = new Dictionary<string, IReadOnlyDictionary<string, string>>();
        foreach (var task in config.Tasks)
        {
            var classes = task.Classes.ToList();
            var byClass = classes.Select(_ => new List<WorldItem>()).ToList();
            foreach (var item in task.Sources.SelectMany(s => taskItems[s]))
            {
                int c = ClassOf(task, item);
                if (c >= 0)
                {
                    byClass[c].Add(item);
                }
            }

            for (int c = 0; c < classes.Count; c++)
            {
                int needed = task.SplitBy == "item" ? 3 : 1;
                if (byClass[c].Count < needed)
                {
                    throw new InvalidDataException(
                        $"tasks.{task.Name}: class '{classes[c].Key}' has {byClass[c].Count} items outside the pool ({needed} needed); choose other classes or sources.");
                }
            }

            // Items of each class split 70/10/20 between train, validation and test (splitBy: item), or shared (render).
            var splitItems = Splits.ToDictionary(s => s, _ => new List<List<WorldItem>>());
            for (int c = 0; c < classes.Count; c++)
            {
                var list = Shuffle(byClass[c], StableSeed(config.Seed, task.Name, classes[c].Key));
                if (task.SplitBy == "render")
                {
                    foreach (string split in Splits)
                    {
                        splitItems[split].Add(list);
                    }

                    continue;
                }

                int val = Math.Max(1, (int)Math.Round(list.Count * 0.1));
                int test = Math.Max(1, (int)Math.Round(list.Count * 0.2));
                splitItems["val"].Add(list.Take(val).ToList());
                splitItems["test"].Add(list.Skip(val).Take(test).ToList());
                splitItems["train"].Add(list.Skip(val + test).ToList());
            }

            var hashes = new Dictionary<string, string>();
            foreach (string split in Splits)
            {
                int count = split switch { "train" => task.Train, "val" => task.Val, _ => task.Test };
                var random = new Random(StableSeed(config.Seed, task.Name, split));
                var splitHashes = new Dictionary<string, string>();
                var manifest = new List<string>();
                for (int i = 0; i < count; i++)
                {
                    // Classes in turn (balanced), a random item of the class, a fresh augmentation.
                    int c = i % classes.Count;
                    var candidates = splitItems[split][c];
                    var item = candidates[random.Next(candidates.Count)];
                    var augmentation = Augmentation.FromSeed(StableSeed(config.Seed, task.Name, split, i.ToString(System.Globalization.CultureInfo.InvariantCulture)), config.Augmentation);
                    var image = item.Render(augmentation, config.ImageSize);
                    string file = Path.Combine("tasks", task.Name, split, ClassFolder(c, classes[c].Value), $"{i:D5}.png");
                    WritePng(Path.Combine(output, file), image);
                    string hash = Disjointness.Hash(image);
                    splitHashes.TryAdd(hash, file);
                    manifest.Add(JsonSerializer.Serialize(new { file = Path.GetRelativePath(Path.Combine("tasks", task.Name), file), key = item.Key, sha256 = hash }));
                }

                File.WriteAllLines(Path.Combine(output, "tasks", task.Name, $"{split}.jsonl"), manifest);
                taskHashes[$"{task.Name}/{split}"] = splitHashes;
            }

            var meta = new { name = task.Name, classNames = classes.Select(c => c.Value).ToArray(), templates = task.Templates, label = task.Label, splitBy = task.SplitBy };
            File.WriteAllText(Path.Combine(output, "tasks", task.Name, "task.json"), JsonSerializer.Serialize(meta, new JsonSerializerOptions { WriteIndented = true }));
            log.Add($"{task.Name}: {classes.Count} classes, {byClass.Sum(b => b.Count)} items ({string.Join(", ", byClass.Select(b => b.Count))}), {task.Train}/{task.Val}/{task.Test} images");
        }

        Disjointness.Check(poolHashes, taskHashes);
        log.Add($"tasks: disjoint from the pool's {poolHashes.Count} images by content hash");
        return log;
    }

    /// <summary>
    /// Writes the pre-training pool into <paramref name="output"/>: <c>images/NNNNNN.png</c> and <c>captions.jsonl</c>
    /// (file, caption, item key, SHA-256), from the pool share of each pool source; returns a one-line summary.
    /// </summary>
    public static string WritePool(WorldConfig config, IReadOnlyDictionary<string, List<WorldItem>> sources, string output)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(sources);
        var poolItems = sources.SelectMany(s => Partition(config, s.Key, s.Value).Pool).ToList();
        WritePool(config, poolItems, output);
        return $"pool: {config.Pretraining.Pairs} pairs from {poolItems.Count} items";
    }

    /// <summary>The pool's content hashes (hash → file) as <see cref="WritePool(WorldConfig, IReadOnlyDictionary{string, List{WorldItem}}, string)"/> recorded them.</summary>
    public static Dictionary<string, string> PoolHashes(string poolFolder)
    {
        var hashes = new Dictionary<string, string>();
        foreach (string line in File.ReadLines(Path.Combine(poolFolder, "captions.jsonl")))
        {
            var entry = JsonDocument.Parse(line).RootElement;
            hashes.TryAdd(entry.GetProperty("sha256").GetString()!, entry.GetProperty("file").GetString()!);
        }

        return hashes;
    }

    /// <summary>The class folder's name: the class index (so folder order is class order) and a slug of the name.</summary>
    public static string ClassFolder(int index, string className)
    {
        var slug = new string(className.Select(ch => char.IsLetterOrDigit(ch) ? char.ToLowerInvariant(ch) : '-').ToArray());
        return $"{index:D2}-{slug}";
    }

    /// <summary>A seed from the config's seed and names (SHA-256, so stable across runs and machines).</summary>
    public static int StableSeed(int seed, params string[] parts)
    {
        var bytes = SHA256.HashData(Encoding.UTF8.GetBytes(seed.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\u0000" + string.Join("\u0000", parts)));
        return BitConverter.ToInt32(bytes, 0) & int.MaxValue;
    }

    private static void WritePool(WorldConfig config, List<WorldItem> poolItems, string output)
    {
        if (poolItems.Count == 0)
        {
            throw new InvalidDataException("pretraining: the pool has no items (list pool sources under pretraining.sources).");
        }

        var bySource = poolItems.GroupBy(i => i.Source).Select(g => g.ToList()).ToList();
        var random = new Random(StableSeed(config.Seed, "pool"));
        string folder = Path.Combine(output, "images");
        Directory.CreateDirectory(folder);
        using var captions = new StreamWriter(Path.Combine(output, "captions.jsonl"));
        for (int i = 0; i < config.Pretraining.Pairs; i++)
        {
            // Sources in turn (each source equally often), a random item, a random caption template.
            var items = bySource[i % bySource.Count];
            var item = items[random.Next(items.Count)];
            var templates = config.Pretraining.Captions.GetValueOrDefault(item.Source) ?? config.Pretraining.Captions.GetValueOrDefault("default") ?? ["{}"];
            string caption = templates[random.Next(templates.Count)].Replace("{}", item.Name, StringComparison.Ordinal);
            var image = item.Render(Augmentation.FromSeed(StableSeed(config.Seed, "pool", i.ToString(System.Globalization.CultureInfo.InvariantCulture)), config.Augmentation), config.ImageSize);
            string file = Path.Combine("images", $"{i:D6}.png");
            WritePng(Path.Combine(output, file), image);
            string hash = Disjointness.Hash(image);
            captions.WriteLine(JsonSerializer.Serialize(new { file = $"images/{i:D6}.png", caption, key = item.Key, sha256 = hash }));
        }
    }

    private static void WritePng(string path, RgbImage image)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, ImageRenderer.EncodePng(image));
    }

    private static List<T> Shuffle<T>(IEnumerable<T> items, int seed)
    {
        var list = items.ToList();
        var random = new Random(seed);
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = random.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }

        return list;
    }
}
