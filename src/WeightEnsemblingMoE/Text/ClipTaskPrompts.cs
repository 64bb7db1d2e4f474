using System.Collections.Frozen;
using System.Reflection;
using System.Text.Json;

namespace WeightEnsembling.Text;

/// <summary>
/// Class names and prompt templates for CLIP zero-shot classification, shipped with the library: FusionBench's
/// (tanganke/fusion_bench, MIT licence, <c>fusion_bench/tasks/clip_classification/*.py</c>) for every task of its
/// CLIP template factory, SUN397, Stanford Cars, RESISC45, EuroSAT, SVHN, GTSRB, MNIST and DTD among them.
/// </summary>
/// <remarks>
/// Each task is one JSON file embedded in the assembly
/// (<c>{"task", "source", "commit", "license", "class_names", "templates"}</c>), written from FusionBench's modules by
/// <c>tools/fixtures/fusionbench_task_prompts.py</c>; <c>docs/datasets.md</c> lists them. Task names are FusionBench's
/// dataset keys; <see cref="Get"/> ignores case and treats <c>-</c> and <c>_</c> alike.
/// </remarks>
public static class ClipTaskPrompts
{
    private const string ResourcePrefix = "WeightEnsembling.Text.Tasks.";
    private const string Placeholder = "{}";

    private static readonly Lazy<FrozenDictionary<string, ClipTaskPromptSet>> Tasks = new(LoadAll);

    /// <summary>The names of the tasks shipped, sorted.</summary>
    public static IReadOnlyList<string> Names => Tasks.Value.Values.Select(t => t.Task).Order(StringComparer.Ordinal).ToArray();

    /// <summary>The class names and templates of a task.</summary>
    /// <param name="task">The task name (case and <c>-</c>/<c>_</c> ignored), one of <see cref="Names"/>.</param>
    /// <returns>The task's prompt set.</returns>
    /// <exception cref="KeyNotFoundException">No such task; the message lists the available names.</exception>
    public static ClipTaskPromptSet Get(string task)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(task);
        if (Tasks.Value.TryGetValue(Key(task), out var set))
        {
            return set;
        }
        throw new KeyNotFoundException($"No CLIP prompt set for task '{task}'. Available: {string.Join(", ", Names)}.");
    }

    /// <summary>Fills a template's one <c>{}</c> with a class name, as Python's <c>template.format(class_name)</c> does.</summary>
    /// <param name="template">The template, with exactly one <c>{}</c>.</param>
    /// <param name="className">The class name.</param>
    /// <returns>The prompt.</returns>
    /// <exception cref="ArgumentException">The template does not have exactly one <c>{}</c>.</exception>
    public static string Format(string template, string className)
    {
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(className);
        var at = template.IndexOf(Placeholder, StringComparison.Ordinal);
        if (at < 0 || template.IndexOf(Placeholder, at + Placeholder.Length, StringComparison.Ordinal) >= 0)
        {
            throw new ArgumentException($"Template '{template}' must contain exactly one '{Placeholder}'.", nameof(template));
        }
        return string.Concat(template.AsSpan(0, at), className, template.AsSpan(at + Placeholder.Length));
    }

    private static string Key(string task) => task.Trim().ToLowerInvariant().Replace('_', '-');

    private static FrozenDictionary<string, ClipTaskPromptSet> LoadAll()
    {
        var assembly = typeof(ClipTaskPrompts).Assembly;
        var sets = new Dictionary<string, ClipTaskPromptSet>(StringComparer.Ordinal);
        foreach (var resource in assembly.GetManifestResourceNames().Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal) && n.EndsWith(".json", StringComparison.Ordinal)))
        {
            var set = Read(assembly, resource);
            if (!sets.TryAdd(Key(set.Task), set))
            {
                throw new InvalidDataException($"Embedded prompt file '{resource}': task '{set.Task}' is defined twice.");
            }
        }
        return sets.ToFrozenDictionary(StringComparer.Ordinal);
    }

    private static ClipTaskPromptSet Read(Assembly assembly, string resource)
    {
        using var stream = assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidDataException($"Embedded prompt file '{resource}' cannot be opened.");
        using var document = JsonDocument.Parse(stream);
        var root = document.RootElement;
        string Text(string name) => root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String && value.GetString()!.Length > 0
            ? value.GetString()!
            : throw new InvalidDataException($"Embedded prompt file '{resource}': \"{name}\" must be a non-empty string.");
        string[] Strings(string name) => root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Array && value.GetArrayLength() > 0
            ? value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : throw new InvalidDataException($"Embedded prompt file '{resource}': \"{name}\" holds a non-string.")).ToArray()
            : throw new InvalidDataException($"Embedded prompt file '{resource}': \"{name}\" must be a non-empty array of strings.");
        var templates = Strings("templates");
        foreach (var template in templates)
        {
            var first = template.IndexOf(Placeholder, StringComparison.Ordinal);
            if (first < 0 || template.IndexOf(Placeholder, first + Placeholder.Length, StringComparison.Ordinal) >= 0)
            {
                throw new InvalidDataException($"Embedded prompt file '{resource}': template '{template}' must contain exactly one '{Placeholder}'.");
            }
        }
        return new ClipTaskPromptSet(Text("task"), Strings("class_names"), templates, Text("source"), Text("commit"), Text("license"));
    }
}
