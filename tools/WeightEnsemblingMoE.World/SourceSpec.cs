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

    /// <summary>
    /// With <c>augmentation.nativeColours</c>: the ink this source's monochrome drawings (icons, glyphs, grey images) are
    /// drawn in, <c>#rrggbb</c>; null for the default (black ink, or white on black for grey sets). Different inks and
    /// papers give each source its own image statistics, as the papers' datasets have.
    /// </summary>
    public string? Ink { get; set; }

    /// <summary>With <c>augmentation.nativeColours</c>: the background (<c>#rrggbb</c>); null for the default (white, or black for grey sets).</summary>
    public string? Paper { get; set; }

    /// <summary>
    /// The share of this source's items kept for the pre-training pool, overriding <c>pretraining.poolFraction</c>; null
    /// for that default. 0 keeps the source out of the pool even when listed there.
    /// </summary>
    public double? PoolFraction { get; set; }

    /// <summary>
    /// emoji-datasource: the items are the single-skin-tone variations of the emoji that have them (attribute
    /// <c>tone</c>: light, medium-light, medium, medium-dark, dark) rather than the emoji themselves. The default value is false.
    /// </summary>
    public bool SkinTones { get; set; }
}
