using System.Diagnostics;
using System.Globalization;
using SkiaSharp;
using WeightEnsembling.Data;
using WeightEnsembling.Images;

namespace WeightEnsembling.Benchmarks.Harness;

/// <summary>
/// Images per second of the image pipeline (issue 16): decode only, decode + CLIP resize/crop, and the whole
/// <see cref="ImageFolderDataset"/> loader (ViT-B/32 preprocessing, batches of 32) with 0, 1 and 2 loader threads.
/// <c>loader-throughput [images=512] [folder]</c>: without a folder it writes <c>images</c> JPEGs of 500 × 375 pixels
/// (ImageNet's typical size; smooth gradients with noise, quality 90) into 4 class folders under the temp folder.
/// </summary>
internal static class LoaderThroughputHarness
{
    public static int Run(string[] args)
    {
        int count = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 512;
        string? given = args.Length > 1 ? args[1] : null;
        string folder = given ?? WriteImages(count);
        try
        {
            var processor = new ClipImageProcessor();
            var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToArray();
            Console.WriteLine($"{files.Length} images in {folder}; {Environment.ProcessorCount} cores; load average {LoadAverage()}");
            Console.WriteLine("| stage | threads | images/s |");
            Console.WriteLine("| --- | ---: | ---: |");
            Row("decode only", 1, files.Length, () =>
            {
                foreach (var f in files)
                {
                    _ = ImageDecoder.Default.Decode(f);
                }
            });
            Row("decode + resize/crop", 1, files.Length, () =>
            {
                foreach (var f in files)
                {
                    _ = processor.ResizeAndCrop(ImageDecoder.Default.Decode(f));
                }
            });
            foreach (int threads in new[] { 0, 1, 2 })
            {
                using var data = ImageFolderDataset.Open(folder, processor, new DataLoaderOptions { LoaderThreads = threads, PrefetchBatches = 4 });
                Row("ImageFolderDataset.Batches(32, shuffle)", threads, files.Length, () =>
                {
                    foreach (var batch in data.Batches(32, shuffle: true, seed: 0))
                    {
                        batch.Dispose();
                    }
                });
            }
            return 0;
        }
        finally
        {
            if (given is null)
            {
                Directory.Delete(folder, recursive: true);
            }
        }
    }

    private static void Row(string stage, int threads, int images, Action run)
    {
        var clock = Stopwatch.StartNew();
        run();
        double seconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"| {stage} | {threads} | {(images / seconds).ToString("F1", CultureInfo.InvariantCulture)} |");
    }

    private static string WriteImages(int count)
    {
        string folder = Directory.CreateTempSubdirectory("wemoe-loader").FullName;
        var random = new Random(0);
        var pixels = new byte[500 * 375 * 4];
        for (int i = 0; i < count; i++)
        {
            string cls = Path.Combine(folder, $"class{i % 4}");
            Directory.CreateDirectory(cls);
            double phase = random.NextDouble() * 6.28;
            for (int y = 0; y < 375; y++)
            {
                for (int x = 0; x < 500; x++)
                {
                    int p = ((y * 500) + x) * 4;
                    pixels[p] = (byte)(127 + (100 * Math.Sin((x / 40.0) + phase)) + random.Next(-20, 21));
                    pixels[p + 1] = (byte)(127 + (100 * Math.Cos((y / 30.0) + phase)) + random.Next(-20, 21));
                    pixels[p + 2] = (byte)(((x + y) / 4) + random.Next(0, 40));
                    pixels[p + 3] = 255;
                }
            }
            using var bitmap = new SKBitmap(new SKImageInfo(500, 375, SKColorType.Rgba8888, SKAlphaType.Opaque));
            System.Runtime.InteropServices.Marshal.Copy(pixels, 0, bitmap.GetPixels(), pixels.Length);
            using var encoded = bitmap.Encode(SKEncodedImageFormat.Jpeg, 90);
            File.WriteAllBytes(Path.Combine(cls, $"{i:D5}.jpg"), encoded.ToArray());
        }
        return folder;
    }

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "unknown";
}
