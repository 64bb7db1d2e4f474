namespace WeightEnsembling.World;

/// <summary>The range of the seeded augmentations (config section <c>augmentation</c>).</summary>
public sealed class AugmentationOptions
{
    /// <summary>The smallest side of the drawing as a fraction of the image. The default value is 0.6.</summary>
    public double MinScale { get; set; } = 0.6;

    /// <summary>The largest side of the drawing as a fraction of the image. The default value is 0.95.</summary>
    public double MaxScale { get; set; } = 0.95;

    /// <summary>The largest shift of the drawing's centre, as a fraction of the image. The default value is 0.1.</summary>
    public double MaxOffset { get; set; } = 0.1;

    /// <summary>The least luma difference (0–1) between foreground and background. The default value is 0.3.</summary>
    public double MinLumaContrast { get; set; } = 0.3;

    /// <summary>
    /// Whether every rendering keeps its source's native colours instead of random ones: icons and glyphs black on
    /// white, grey sets (Fashion-MNIST, digits) white on black as published, emoji and flags in their own colours on
    /// white. With random colours (the default value, <see langword="false"/>) colour tells no task apart; with native
    /// colours the tasks differ in their image statistics as the papers' eight datasets do.
    /// </summary>
    public bool NativeColours { get; set; }

    public void Validate()
    {
        if (MinScale <= 0 || MaxScale < MinScale || MaxScale > 2)
        {
            throw new InvalidDataException($"augmentation: minScale {MinScale} and maxScale {MaxScale} must satisfy 0 < minScale ≤ maxScale ≤ 2.");
        }

        if (MaxOffset < 0 || MaxOffset > 0.5)
        {
            throw new InvalidDataException($"augmentation: maxOffset {MaxOffset} must be in [0, 0.5].");
        }

        if (MinLumaContrast < 0 || MinLumaContrast > 0.6)
        {
            throw new InvalidDataException($"augmentation: minLumaContrast {MinLumaContrast} must be in [0, 0.6].");
        }
    }
}
