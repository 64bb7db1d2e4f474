namespace WeightEnsembling.World;

/// <summary>One source of items (config section <c>sources</c>): its kind and where its files are.</summary>
public sealed class SourceSpec
{
    /// <summary><c>iconify</c>, <c>emoji-datasource</c>, <c>flag-icons</c>, <c>fonts</c> or <c>idx</c>.</summary>
    public string Kind { get; set; } = "";

    /// <summary>The npm package (by name, as pinned in <c>packages</c>) for iconify, emoji-datasource and flag-icons.</summary>
    public string? Package { get; set; }

    /// <summary>emoji-datasource: the image set (<c>twitter</c>, <c>google</c>, …; images under <c>img/SET/64</c>).</summary>
    public string? Set { get; set; }

    /// <summary>fonts: the font families to use (fc-list names), each style of each family a font.</summary>
    public List<string> Families { get; set; } = [];

    /// <summary>fonts: the characters to draw.</summary>
    public string Characters { get; set; } = "";

    /// <summary>idx: image files (IDX, gzip allowed), relative to the config file; paired with <see cref="Labels"/>.</summary>
    public List<string> Images { get; set; } = [];

    /// <summary>idx: label files, one per image file.</summary>
    public List<string> Labels { get; set; } = [];

    /// <summary>idx: the class names, by label.</summary>
    public List<string> ClassNames { get; set; } = [];

    /// <summary>At most this many items (after a seeded shuffle), 0 for all. The default value is 0.</summary>
    public int MaxItems { get; set; }
}
