using TorchSharp;
using WeightEnsembling.Clip;

namespace WeightEnsembling.World;

/// <summary>
/// Writes the QuickStart's assets from a built world (issue 17 item 8): the pre-trained CLIP folder (both towers, with
/// its tokenizer files, so the QuickStart builds the zero-shot heads itself) and each expert's vision folder, all in
/// float16 (half the bytes; the QuickStart reads them back as float32), and each task's <c>task.json</c> with its
/// validation and test image folders. Written into <c>OUT.tmp</c> and renamed, so an interrupted export leaves no half-written assets.
/// </summary>
public static class QuickStartExport
{
    private static readonly string[] TokenizerFiles = ["vocab.json", "merges.txt", "tokenizer_config.json"];

    private static readonly string[] Splits = ["val", "test"];

    /// <summary>The assets' README: what they are, how they were made, and the licences of what the images show.</summary>
    private const string Notice = """
        # The QuickStart's world (issue 17 item 8)

        Written by `dotnet run --project tools/WeightEnsemblingMoE.World -c Release -- export-quickstart --config
        tools/WeightEnsemblingMoE.World/worlds/quickstart.yaml --world WORLD --out samples/QuickStart/assets/world` from a world
        built with `build --config tools/WeightEnsemblingMoE.World/worlds/quickstart.yaml` (docs/world.md). Do not edit by hand.

        - `pretrained/`: the tiny CLIP (both towers, float16) pre-trained contrastively on the world's image-caption pool, with
          its byte-level BPE tokenizer in CLIP's file format.
        - `experts/TASK/`: the image tower fine-tuned on each task through its frozen zero-shot head (float16).
        - `tasks/TASK/`: `task.json` (class names, prompt templates) and the `val` and `test` image folders (32 x 32 PNG).

        The images are renderings of third-party material (docs/datasets.md has the versions and where each licence was read):
        - flags: `flag-icons` 7.5.0, MIT (Panayiotis Lipiridis);
        - letters: DejaVu fonts (Debian `fonts-dejavu-core`), Bitstream Vera licence with DejaVu's public-domain changes;
        - handwritten digits: OpenCV's copy of MNIST (`opencv-doc`), BSD-3-Clause / Apache-2.0 (OpenCV), MNIST digits;
        - UCI optical digits (scikit-learn's copy), CC BY 4.0 (Alpaydin and Kaynak, UCI Machine Learning Repository);
        - arrows: `@iconify-json/tabler` 1.2.41 (Tabler Icons, Pawel Kuna), MIT;
        - icon weights: `@iconify-json/ph` 1.2.2 (Phosphor Icons), MIT;
        - icon frames: `@iconify-json/mdi` 1.2.3 (Material Design Icons, Pictogrammers), Apache-2.0;
        - skin tones: `emoji-datasource-twitter` 16.0.0, Twemoji graphics CC BY 4.0 (Twitter, Inc. and other contributors).

        The models were trained on renderings of the same sources plus `@iconify-json/carbon` (Apache-2.0),
        `@iconify-json/game-icons` (CC BY 3.0) and Fashion-MNIST (MIT).
        """;

    /// <summary>Exports the assets of <paramref name="config"/>'s tasks from <paramref name="world"/> into <paramref name="output"/> (replaced).</summary>
    /// <returns>One line per task and the total size.</returns>
    public static IReadOnlyList<string> Export(WorldConfig config, string world, string output)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentException.ThrowIfNullOrWhiteSpace(world);
        ArgumentException.ThrowIfNullOrWhiteSpace(output);
        foreach (string stage in new[] { "data", "pretrained", "zoo" })
        {
            if (!File.Exists(Path.Combine(world, stage, ".stage")))
            {
                throw new DirectoryNotFoundException($"The world in '{world}' has no built '{stage}' stage; run the build command first.");
            }
        }

        string temp = Path.GetFullPath(output).TrimEnd(Path.DirectorySeparatorChar) + ".tmp";
        if (Directory.Exists(temp))
        {
            Directory.Delete(temp, recursive: true);
        }

        var log = new List<string>();
        using (var clip = ClipModel.FromPretrained(Path.Combine(world, "pretrained")))
        {
            string pretrained = Path.Combine(temp, "pretrained");
            clip.SaveTo(pretrained, torch.ScalarType.Float16);
            foreach (string file in TokenizerFiles)
            {
                File.Copy(Path.Combine(world, "pretrained", file), Path.Combine(pretrained, file));
            }
        }

        foreach (var task in config.Tasks)
        {
            using (var expert = ClipVisionModel.FromPretrained(Path.Combine(world, "zoo", "experts", task.Name)))
            {
                expert.SaveTo(Path.Combine(temp, "experts", task.Name), torch.ScalarType.Float16);
            }

            string source = Path.Combine(world, "data", "tasks", task.Name);
            string target = Path.Combine(temp, "tasks", task.Name);
            Directory.CreateDirectory(target);
            File.Copy(Path.Combine(source, "task.json"), Path.Combine(target, "task.json"));
            int images = 0;
            foreach (string split in Splits)
            {
                foreach (string file in Directory.EnumerateFiles(Path.Combine(source, split), "*.png", SearchOption.AllDirectories))
                {
                    string copy = Path.Combine(target, split, Path.GetRelativePath(Path.Combine(source, split), file));
                    Directory.CreateDirectory(Path.GetDirectoryName(copy)!);
                    File.Copy(file, copy);
                    images++;
                }
            }

            log.Add($"{task.Name}: expert (float16) and {images} validation and test images");
        }

        File.WriteAllText(Path.Combine(temp, "README.md"), Notice);
        if (Directory.Exists(output))
        {
            Directory.Delete(output, recursive: true);
        }

        Directory.Move(temp, output);
        long bytes = Directory.EnumerateFiles(output, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        log.Add($"exported to {output}: {bytes / 1024.0 / 1024.0:F1} MiB");
        return log;
    }
}
