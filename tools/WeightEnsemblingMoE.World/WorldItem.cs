using WeightEnsembling.Images;

namespace WeightEnsembling.World;

/// <summary>
/// One drawable thing from a source (an icon, an emoji, a flag, a glyph, a grey image): a unique key, the name its
/// captions are made from, its labels from the package's metadata, and how to render it under an augmentation.
/// </summary>
public sealed class WorldItem
{
    public WorldItem(string source, string key, string name, IReadOnlyDictionary<string, string> attributes, Func<Augmentation, int, RgbImage> render)
    {
        Source = source;
        Key = key;
        Name = name;
        Attributes = attributes;
        _render = render;
    }

    private readonly Func<Augmentation, int, RgbImage> _render;

    /// <summary>The config's name of the source.</summary>
    public string Source { get; }

    /// <summary>Unique over the world: <c>source:id</c>.</summary>
    public string Key { get; }

    /// <summary>Plain words for captions, e.g. <c>grinning face</c>.</summary>
    public string Name { get; }

    /// <summary>Labels from the metadata (e.g. <c>category</c>, <c>continent</c>, <c>set</c>, <c>character</c>).</summary>
    public IReadOnlyDictionary<string, string> Attributes { get; }

    /// <summary>Renders the item at <paramref name="size"/>×<paramref name="size"/> pixels.</summary>
    public RgbImage Render(Augmentation augmentation, int size) => _render(augmentation, size);
}
