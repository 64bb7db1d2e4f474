using System.Globalization;
using System.IO.Compression;
using TorchSharp;
using WeightEnsembling.Images;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Zoo;

/// <summary>
/// The suite's data: three real digit/clothing datasets reachable as Debian packages, converted to one format (28×28
/// grey images, IDX gzip) with seeded splits: a pre-training pool disjoint from everything else, then train, validation
/// and test. Sources and licences: docs/datasets.md.
/// </summary>
public static class SuiteData
{
    public const string FashionMnistFolder = "/usr/share/datasets/fashion-mnist";
    public const string DigitsPng = "/usr/share/doc/opencv-doc/examples/data/digits.png";
    public const string UciDigitsCsv = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";

    public static readonly string[] Datasets = ["fashion", "mnist", "uci"];
    public static readonly string[] Splits = ["pretrain", "train", "val", "test"];

    /// <summary>Split sizes per dataset: pretrain, train, val, test.</summary>
    public static readonly IReadOnlyDictionary<string, int[]> SplitSizes = new Dictionary<string, int[]>
    {
        ["fashion"] = [6000, 6000, 1000, 2000],
        ["mnist"] = [1000, 2500, 500, 1000],
        ["uci"] = [300, 900, 197, 400],
    };

    /// <summary>Reads the three sources, shuffles each with <paramref name="seed"/>, splits, writes IDX gzip files.</summary>
    public static void Prepare(string output, int seed, string? fashionFolder = null, string? digitsPng = null, string? uciCsv = null)
    {
        Directory.CreateDirectory(output);
        var sources = new Dictionary<string, (Tensor Images, Tensor Labels)>
        {
            ["fashion"] = ReadFashion(fashionFolder ?? FashionMnistFolder),
            ["mnist"] = ReadOpenCvDigits(digitsPng ?? DigitsPng),
            ["uci"] = ReadUciDigits(uciCsv ?? UciDigitsCsv),
        };
        foreach (var (name, (images, labels)) in sources)
        {
            using var generator = new Generator((ulong)(seed + name.Length));
            using var order = randperm(images.shape[0], generator: generator);
            long start = 0;
            var sizes = SplitSizes[name];
            for (int s = 0; s < Splits.Length; s++)
            {
                using var index = order.narrow(0, start, sizes[s]);
                start += sizes[s];
                using var splitImages = images.index_select(0, index);
                using var splitLabels = labels.index_select(0, index).to(ScalarType.Byte);
                IdxWriter.Write(Path.Combine(output, $"{name}-{Splits[s]}-images.idx.gz"), splitImages);
                IdxWriter.Write(Path.Combine(output, $"{name}-{Splits[s]}-labels.idx.gz"), splitLabels);
            }

            images.Dispose();
            labels.Dispose();
        }
    }

    /// <summary>Loads one prepared split as uint8 images [N, 28, 28] and labels [N].</summary>
    public static (Tensor Images, Tensor Labels) Load(string folder, string dataset, string split) =>
        (IdxReader.Read(Path.Combine(folder, $"{dataset}-{split}-images.idx.gz")),
         IdxReader.Read(Path.Combine(folder, $"{dataset}-{split}-labels.idx.gz")).to(ScalarType.Int64));

    private static (Tensor, Tensor) ReadFashion(string folder)
    {
        // Fashion-MNIST's own train and test files are pooled, then re-split by seed.
        using var trainImages = IdxReader.Read(Path.Combine(folder, "train-images-idx3-ubyte.gz"));
        using var trainLabels = IdxReader.Read(Path.Combine(folder, "train-labels-idx1-ubyte.gz"));
        using var testImages = IdxReader.Read(Path.Combine(folder, "t10k-images-idx3-ubyte.gz"));
        using var testLabels = IdxReader.Read(Path.Combine(folder, "t10k-labels-idx1-ubyte.gz"));
        return (cat([trainImages, testImages], 0), cat([trainLabels, testLabels], 0).to(ScalarType.Int64));
    }

    // OpenCV's digits.png: 2000×1000 pixels, 20×20 cells, 100 cells per row, five rows of cells per digit (500 each).
    private static (Tensor, Tensor) ReadOpenCvDigits(string path)
    {
        using var scope = NewDisposeScope();
        var png = ImageDecoder.Default.Decode(path).ToTensor(); // [1000, 2000, 3], grey replicated
        var grey = png.narrow(2, 0, 1).squeeze(2);
        if (grey.shape[0] != 1000 || grey.shape[1] != 2000)
        {
            throw new InvalidDataException($"'{path}' is {grey.shape[1]}×{grey.shape[0]}; OpenCV's digits.png is 2000×1000.");
        }

        var cells = grey.reshape(50, 20, 100, 20).permute(0, 2, 1, 3).reshape(5000, 1, 20, 20).to(ScalarType.Float32);
        var padded = nn.functional.pad(cells, [4, 4, 4, 4]); // 28×28, as MNIST centres 20×20 digits in 28×28
        var images = padded.squeeze(1).round().clamp(0, 255).to(ScalarType.Byte);
        var labels = arange(5000, ScalarType.Int64).div(500, rounding_mode: RoundingMode.floor);
        return (images.MoveToOuterDisposeScope(), labels.MoveToOuterDisposeScope());
    }

    // scikit-learn's copy of the UCI optical digits: 1,797 rows of 64 grey levels (0–16) and the label.
    private static (Tensor, Tensor) ReadUciDigits(string path)
    {
        using var stream = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        using var reader = new StreamReader(stream);
        var pixels = new List<float>();
        var labels = new List<long>();
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.Length == 0)
            {
                continue;
            }

            var fields = line.Split(',');
            if (fields.Length != 65)
            {
                throw new InvalidDataException($"'{path}': a row has {fields.Length} fields; 65 (64 pixels and the label) are expected.");
            }

            pixels.AddRange(fields.Take(64).Select(f => float.Parse(f, CultureInfo.InvariantCulture)));
            labels.Add(long.Parse(fields[64], CultureInfo.InvariantCulture));
        }

        using var scope = NewDisposeScope();
        int n = labels.Count;
        var small = tensor(pixels.ToArray()).reshape(n, 1, 8, 8) * (255f / 16f);
        // 8×8 → 20×20 (bilinear), centred in 28×28 like the other digit sets.
        var resized = nn.functional.interpolate(small, size: [20, 20], mode: InterpolationMode.Bilinear, align_corners: false);
        var images = nn.functional.pad(resized, [4, 4, 4, 4]).squeeze(1).round().clamp(0, 255).to(ScalarType.Byte);
        return (images.MoveToOuterDisposeScope(), tensor(labels.ToArray()).MoveToOuterDisposeScope());
    }
}
