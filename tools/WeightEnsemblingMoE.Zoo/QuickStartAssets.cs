using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Zoo;

/// <summary>
/// The small slice of the suite that ships with <c>samples/QuickStart</c> so that it runs offline with no apt step: the
/// first validation and test examples of each prepared dataset (IDX gzip, the suite's own format) and the zoo (float16
/// safetensors folders and heads), all reproducible with this tool.
/// </summary>
public static class QuickStartAssets
{
    public const int ValidationExamples = 200;
    public const int TestExamples = 500;

    public static void Export(string dataFolder, string zooFolder, string output)
    {
        string data = Path.Combine(output, "data");
        Directory.CreateDirectory(data);
        foreach (var dataset in SuiteData.Datasets)
        {
            foreach (var (split, count) in new[] { ("val", ValidationExamples), ("test", TestExamples) })
            {
                var (images, labels) = SuiteData.Load(dataFolder, dataset, split);
                using (images)
                using (labels)
                using (var someImages = images.narrow(0, 0, Math.Min(count, images.shape[0])))
                using (var someLabels = labels.narrow(0, 0, Math.Min(count, labels.shape[0])).to(ScalarType.Byte))
                {
                    IdxWriter.Write(Path.Combine(data, $"{dataset}-{split}-images.idx.gz"), someImages);
                    IdxWriter.Write(Path.Combine(data, $"{dataset}-{split}-labels.idx.gz"), someLabels);
                }
            }
        }

        CopyFolder(zooFolder, Path.Combine(output, "zoo"));
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from))
        {
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)), overwrite: true);
        }

        foreach (var folder in Directory.GetDirectories(from))
        {
            CopyFolder(folder, Path.Combine(to, Path.GetFileName(folder)));
        }
    }
}
