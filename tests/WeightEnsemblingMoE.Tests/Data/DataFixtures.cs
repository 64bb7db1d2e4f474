using WeightEnsembling.Images;

namespace WeightEnsembling.Tests.Data;

/// <summary>The tiny image folder and parquet files made by tools/fixtures (clip_preprocess_reference.py, parquet/write_parquet.js).</summary>
internal static class DataFixtures
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "Fixtures", "Data");

    public static string ImageFolder => Path.Combine(Root, "imagefolder");

    public static string Parquet(string name) => Path.Combine(Root, name);

    /// <summary>A small CLIP-style processor: shortest side 24, crop 20 × 22.</summary>
    public static ClipImageProcessor Processor { get; } = new() { ShortestEdge = 24, CropHeight = 20, CropWidth = 22 };
}
