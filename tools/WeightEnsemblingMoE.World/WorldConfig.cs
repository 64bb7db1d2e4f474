using System.Text.Json;
using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace WeightEnsembling.World;

/// <summary>
/// The world's config file (YAML, camelCase keys; JSON is YAML too): pinned packages, sources, augmentation, the
/// pre-training pool, the tasks, the model and the training lengths. Another task mix is another file, no code change.
/// </summary>
public sealed class WorldConfig
{
    /// <summary>Seed of every draw (item splits, augmentations, initialisation, batches). The default value is 0.</summary>
    public int Seed { get; set; }

    /// <summary>Image side in pixels. The default value is 32.</summary>
    public int ImageSize { get; set; } = 32;

    /// <summary>The npm packages, pinned by version and integrity.</summary>
    public List<NpmPackage> Packages { get; set; } = [];

    /// <summary>The item sources by name.</summary>
    public Dictionary<string, SourceSpec> Sources { get; set; } = [];

    /// <summary>The seeded augmentations' ranges.</summary>
    public AugmentationOptions Augmentation { get; set; } = new();

    /// <summary>The pre-training pool and its training.</summary>
    public PretrainingSpec Pretraining { get; set; } = new();

    /// <summary>The tasks.</summary>
    public List<TaskSpec> Tasks { get; set; } = [];

    /// <summary>The tiny CLIP.</summary>
    public ModelSpec Model { get; set; } = new();

    /// <summary>The experts' fine-tuning.</summary>
    public FineTuningSpec FineTuning { get; set; } = new();

    /// <summary>The folder relative paths in the file are resolved against (the file's folder).</summary>
    [YamlIgnore]
    public string BaseFolder { get; set; } = ".";

    /// <summary>Reads and validates a config file.</summary>
    /// <exception cref="InvalidDataException">The file does not parse, or an option is invalid (the message names it and the file).</exception>
    public static WorldConfig Load(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var deserializer = new DeserializerBuilder().WithNamingConvention(CamelCaseNamingConvention.Instance).Build();
        WorldConfig config;
        try
        {
            config = deserializer.Deserialize<WorldConfig>(File.ReadAllText(path)) ?? throw new InvalidDataException("empty file");
        }
        catch (YamlDotNet.Core.YamlException e)
        {
            throw new InvalidDataException($"'{path}': {e.Message}", e);
        }

        config.BaseFolder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        try
        {
            config.Validate();
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"'{path}': {e.Message}", e);
        }

        return config;
    }

    /// <summary>Resolves a path of the file against <see cref="BaseFolder"/>.</summary>
    public string Resolve(string path) => Path.GetFullPath(Path.Combine(BaseFolder, path));

    /// <summary>A stable JSON image of part of the config, for the stages' content hashes.</summary>
    public static string Canonical(object? section) => JsonSerializer.Serialize(section);

    /// <summary>Checks every option; throws naming the first bad one.</summary>
    public void Validate()
    {
        if (ImageSize < 8 || ImageSize > 256)
        {
            throw new InvalidDataException($"imageSize {ImageSize} must be in [8, 256].");
        }

        Augmentation.Validate();
        var packages = Packages.Select(p => p.Name).ToList();
        foreach (var duplicate in packages.GroupBy(n => n).Where(g => g.Count() > 1))
        {
            throw new InvalidDataException($"packages: '{duplicate.Key}' is pinned twice.");
        }

        string[] kinds = ["iconify", "emoji-datasource", "flag-icons", "fonts", "idx"];
        foreach (var (name, source) in Sources)
        {
            if (!kinds.Contains(source.Kind))
            {
                throw new InvalidDataException($"sources.{name}.kind '{source.Kind}' is not one of {string.Join(", ", kinds)}.");
            }

            if (source.Kind is "iconify" or "emoji-datasource" or "flag-icons" && (source.Package is null || !packages.Contains(source.Package)))
            {
                throw new InvalidDataException($"sources.{name}.package '{source.Package}' is not pinned in packages.");
            }

            if (source.Kind == "idx" && (source.Images.Count == 0 || source.Images.Count != source.Labels.Count || source.ClassNames.Count == 0))
            {
                throw new InvalidDataException($"sources.{name}: an idx source needs images and labels files in pairs, and classNames.");
            }

            if (source.Kind == "fonts" && (source.Families.Count == 0 || source.Characters.Length == 0))
            {
                throw new InvalidDataException($"sources.{name}: a fonts source needs families and characters.");
            }

            foreach (var (field, colour) in new[] { ("ink", source.Ink), ("paper", source.Paper) })
            {
                if (colour is not null && !System.Text.RegularExpressions.Regex.IsMatch(colour, "^#[0-9a-fA-F]{6}$"))
                {
                    throw new InvalidDataException($"sources.{name}.{field} '{colour}' is not a colour of the form #rrggbb.");
                }
            }

            if (source.PoolFraction is { } fraction && (fraction < 0 || fraction >= 1))
            {
                throw new InvalidDataException($"sources.{name}.poolFraction {fraction} must be in [0, 1).");
            }

            if (source.SkinTones && source.Kind != "emoji-datasource")
            {
                throw new InvalidDataException($"sources.{name}.skinTones applies to emoji-datasource sources only.");
            }
        }

        foreach (string source in Pretraining.Sources.Where(s => !Sources.ContainsKey(s)))
        {
            throw new InvalidDataException($"pretraining.sources: '{source}' is not a source.");
        }

        if (Pretraining.PoolFraction <= 0 || Pretraining.PoolFraction >= 1)
        {
            throw new InvalidDataException($"pretraining.poolFraction {Pretraining.PoolFraction} must be in (0, 1).");
        }

        if (Pretraining.Pairs < Pretraining.BatchSize || Pretraining.BatchSize < 2)
        {
            throw new InvalidDataException($"pretraining: pairs ({Pretraining.Pairs}) must be at least batchSize ({Pretraining.BatchSize}), and batchSize at least 2.");
        }

        // A caption may leave the item's name out (e.g. "a handwritten digit": the pool shows the domain without naming
        // the task's classes); a prompt template must hold the class name.
        foreach (var (source, templates) in Pretraining.Captions)
        {
            foreach (string template in templates.Where(t => t.Split("{}").Length > 2 || string.IsNullOrWhiteSpace(t)))
            {
                throw new InvalidDataException($"pretraining.captions.{source}: caption template '{template}' must be non-empty and hold at most one {{}}.");
            }
        }

        foreach (var template in Tasks.SelectMany(t => t.Templates))
        {
            if (template.Split("{}").Length != 2)
            {
                throw new InvalidDataException($"template '{template}' must hold exactly one {{}}.");
            }
        }

        if (Tasks.Select(t => t.Name).Distinct().Count() != Tasks.Count)
        {
            throw new InvalidDataException("tasks: two tasks share a name.");
        }

        foreach (var task in Tasks)
        {
            string at = $"tasks.{task.Name}";
            if (string.IsNullOrWhiteSpace(task.Name) || task.Name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
            {
                throw new InvalidDataException($"tasks: '{task.Name}' is not a usable folder name.");
            }

            foreach (string source in task.Sources.Where(s => !Sources.ContainsKey(s)))
            {
                throw new InvalidDataException($"{at}.sources: '{source}' is not a source.");
            }

            if (task.Sources.Count == 0 || task.Classes.Count < 2 || task.Templates.Count == 0 || string.IsNullOrEmpty(task.Label))
            {
                throw new InvalidDataException($"{at}: a task needs sources, a label, at least two classes and a template.");
            }

            if (task.Label == "name")
            {
                foreach (string pattern in task.Classes.Keys)
                {
                    try
                    {
                        _ = new System.Text.RegularExpressions.Regex(pattern, System.Text.RegularExpressions.RegexOptions.None, TimeSpan.FromSeconds(1));
                    }
                    catch (ArgumentException e)
                    {
                        throw new InvalidDataException($"{at}.classes: '{pattern}' is not a regular expression (label: name matches class keys against item names): {e.Message}");
                    }
                }
            }

            if (task.SplitBy is not ("item" or "render"))
            {
                throw new InvalidDataException($"{at}.splitBy '{task.SplitBy}' must be item or render.");
            }

            if (task.Train <= 0 || task.Val <= 0 || task.Test <= 0)
            {
                throw new InvalidDataException($"{at}: train, val and test must be positive.");
            }
        }

        if (Model.VocabSize < 600)
        {
            throw new InvalidDataException($"model.vocabSize {Model.VocabSize} must be at least 600 (512 byte tokens, the special tokens, some merges).");
        }

        if (ImageSize % Model.PatchSize != 0)
        {
            throw new InvalidDataException($"model.patchSize {Model.PatchSize} must divide imageSize {ImageSize}.");
        }
    }
}
