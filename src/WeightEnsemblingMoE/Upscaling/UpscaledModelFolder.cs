using System.Security.Cryptography;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Upscaling;

/// <summary>
/// Reads and writes the folder of a saved upscaled model: <see cref="UpscaledModelConfig.FileName"/> and the router
/// weights in a content-addressed safetensors file (<c>routers-{sha256 prefix}.safetensors</c>) that the configuration
/// names with its full SHA-256. The weights are written first and the configuration last, each atomically, so that at
/// any moment the configuration names a complete weights file: a save killed part-way leaves the previous save loadable,
/// and a folder whose weights do not match its configuration is refused.
/// </summary>
internal static class UpscaledModelFolder
{
    private const string WeightsPrefix = "routers-";
    private const string WeightsSuffix = ".safetensors";
    private const string PendingPrefix = ".routers-pending-";

    /// <summary>Writes <paramref name="routers"/> and <paramref name="config"/> into <paramref name="folder"/>, created if needed.</summary>
    public static void Save(string folder, UpscaledModelConfig config, IReadOnlyDictionary<string, Tensor> routers)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        CheckFinite(routers, "the model's routers");
        Directory.CreateDirectory(folder);
        string pending = Path.Combine(folder, $"{PendingPrefix}{Guid.NewGuid():N}{WeightsSuffix}");
        try
        {
            SafeTensorsWriter.Save(pending, routers, new Dictionary<string, string>(StringComparer.Ordinal) { ["format"] = UpscaledModelConfig.FormatValue });
            string sha = Sha256(pending);
            string weightsFile = $"{WeightsPrefix}{sha[..16]}{WeightsSuffix}";
            File.Move(pending, Path.Combine(folder, weightsFile), overwrite: true);
            var saved = config with { WeightsFile = weightsFile, WeightsSha256 = sha };
            WriteAtomically(Path.Combine(folder, UpscaledModelConfig.FileName), saved.ToJson());

            // The new configuration is in place: weights files it does not name, and leftovers of killed saves, go.
            foreach (var file in Directory.EnumerateFiles(folder))
            {
                string name = Path.GetFileName(file);
                bool staleWeights = name.StartsWith(WeightsPrefix, StringComparison.Ordinal) && name.EndsWith(WeightsSuffix, StringComparison.Ordinal) && name != weightsFile;
                bool leftover = name.StartsWith(PendingPrefix, StringComparison.Ordinal) || name.StartsWith("." + UpscaledModelConfig.FileName + ".", StringComparison.Ordinal);
                if (staleWeights || leftover)
                {
                    File.Delete(file);
                }
            }
        }
        finally
        {
            if (File.Exists(pending))
            {
                File.Delete(pending);
            }
        }
    }

    /// <summary>Reads a saved folder's configuration only.</summary>
    public static UpscaledModelConfig ReadConfig(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"The saved model folder '{folder}' does not exist.");
        }

        return UpscaledModelConfig.FromFile(Path.Combine(folder, UpscaledModelConfig.FileName));
    }

    /// <summary>Reads the router weights a configuration names, checking the file's hash and every value; the caller owns them.</summary>
    public static Dictionary<string, Tensor> ReadRouters(string folder, UpscaledModelConfig config)
    {
        string path = Path.Combine(folder, config.WeightsFile!);
        if (!File.Exists(path))
        {
            throw new InvalidDataException($"'{folder}': the router weights '{config.WeightsFile}' named by {UpscaledModelConfig.FileName} are missing.");
        }

        string sha = Sha256(path);
        if (!string.Equals(sha, config.WeightsSha256, StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidDataException(
                $"'{path}' does not match {UpscaledModelConfig.FileName} (SHA-256 {sha[..12]}…, expected {config.WeightsSha256![..Math.Min(12, config.WeightsSha256.Length)]}…): the folder mixes two saves or the file is corrupt.");
        }

        var routers = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var file = SafeTensorsFile.Open(path);
            foreach (var name in file.Names)
            {
                routers[name] = file.Load(name);
            }

            CheckFinite(routers, $"'{path}'");
            return routers;
        }
        catch
        {
            foreach (var tensor in routers.Values)
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    /// <summary>Throws naming the first tensor holding NaN or Inf.</summary>
    public static void CheckFinite(IReadOnlyDictionary<string, Tensor> tensors, string where)
    {
        foreach (var (name, tensor) in tensors.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            if (tensor.is_floating_point() && !tensor.isfinite().all().item<bool>())
            {
                throw new InvalidDataException($"{where}: router tensor '{name}' contains NaN or Inf.");
            }
        }
    }

    private static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static void WriteAtomically(string path, string text)
    {
        string temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                var bytes = System.Text.Encoding.UTF8.GetBytes(text);
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp))
            {
                File.Delete(temp);
            }
        }
    }
}
