using WeightEnsembling.Clip;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Plotting;

/// <summary>Tiny models, heads and labelled data for the analysis and plotting tests.</summary>
internal static class PlotData
{
    public const int Classes = 3;

    /// <summary>A frozen linear head on the tiny model's projected features, seeded.</summary>
    public static LinearClassificationHead Head(int seed)
    {
        manual_seed(seed);
        return new LinearClassificationHead(TinyClip.Config.ProjectionDim, Classes);
    }

    /// <summary>Random 8×8 RGB images with labels chosen by <paramref name="model"/> so that it scores well on them.</summary>
    public static InMemoryTaskDataset Data(string name, int count, int seed, ClipVisionModel model, TaskHead head)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var images = TinyClip.Images(count, seed);
        var labels = head.forward(model.GetImageFeatures(images)).argmax(1);
        // Flip every third label so that the accuracy is not trivially 1.
        var flip = arange(count).remainder(3).eq(0);
        labels = where(flip, (labels + 1).remainder(Classes), labels);
        return new InMemoryTaskDataset(name, images, labels, Classes);
    }

    public static string TempBase(string name)
    {
        var folder = Path.Combine(Path.GetTempPath(), "wemoe-plots-" + Guid.NewGuid().ToString("N"));
        return Path.Combine(folder, name);
    }

    public static void DeleteFolderOf(string basePath)
    {
        try
        {
            Directory.Delete(Path.GetDirectoryName(basePath)!, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
