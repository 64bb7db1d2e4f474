namespace WeightEnsembling.World;

/// <summary>
/// One rendering's random choices, drawn from a seed: background and foreground colours (the foreground far enough from
/// the background in luma to stay visible), the drawing's scale within the image and its offset. Every task and the
/// pre-training pool draw from the same distribution, so colour alone does not tell them apart.
/// </summary>
public sealed record Augmentation(byte[] Background, byte[] Foreground, double Scale, double OffsetX, double OffsetY)
{
    /// <summary>Whether the colours are the sources' own (<see cref="AugmentationOptions.NativeColours"/>): grey sets are then drawn white on black.</summary>
    public bool NativeColours { get; init; }

    /// <summary>Whether the colours are a source's own ink and paper (<see cref="SourceSpec.Ink"/>): grey sets then keep them.</summary>
    public bool SourceColours { get; init; }

    /// <summary>Draws the choices for one rendering from <paramref name="seed"/> (the same seed gives the same choices).</summary>
    public static Augmentation FromSeed(int seed, AugmentationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var random = new Random(seed);
        byte[] background = [(byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256)];
        byte[] foreground;
        do
        {
            foreground = [(byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256)];
        }
        while (Math.Abs(Luma(foreground) - Luma(background)) < options.MinLumaContrast * 255);
        double scale = options.MinScale + (random.NextDouble() * (options.MaxScale - options.MinScale));
        double dx = ((random.NextDouble() * 2) - 1) * options.MaxOffset;
        double dy = ((random.NextDouble() * 2) - 1) * options.MaxOffset;
        return options.NativeColours
            ? new Augmentation([255, 255, 255], [0, 0, 0], scale, dx, dy) { NativeColours = true }
            : new Augmentation(background, foreground, scale, dx, dy);
    }

    /// <summary>The drawing's box in pixels for an image of <paramref name="size"/>: centred, scaled, then shifted.</summary>
    public (double X, double Y, double Width, double Height) Box(int size)
    {
        double side = Scale * size;
        return (((size - side) / 2) + (OffsetX * size), ((size - side) / 2) + (OffsetY * size), side, side);
    }

    /// <summary>The foreground as a CSS hex colour.</summary>
    public string ForegroundHex => $"#{Foreground[0]:x2}{Foreground[1]:x2}{Foreground[2]:x2}";

    private static double Luma(byte[] c) => (0.299 * c[0]) + (0.587 * c[1]) + (0.114 * c[2]);
}
