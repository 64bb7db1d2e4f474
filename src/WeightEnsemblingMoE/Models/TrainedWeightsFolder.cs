using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Models;

/// <summary>
/// Reads and writes the folder of a saved adapted model (upscaled routers, AdaMerging coefficients): a JSON configuration
/// and the trained weights in a content-addressed safetensors file (<c>weights-{sha256 prefix}.safetensors</c>) that the configuration
/// names with its full SHA-256. The weights are written first and the configuration last, each atomically (temporary
/// file, fsync, rename, fsync of the folder), so that at any moment, and after a power loss once a save has returned, the
/// configuration names a complete weights file: a save killed part-way leaves the previous save loadable, the next save
/// removes what it left, and a folder whose weights do not match its configuration is refused.
/// </summary>
internal static class TrainedWeightsFolder
{
    private const string WeightsPrefix = "weights-";
    private const string WeightsSuffix = ".safetensors";
    private const string PendingPrefix = ".weights-pending-";

    /// <summary>
    /// Writes <paramref name="tensors"/> (checked finite) into a content-addressed weights file, then the configuration
    /// <paramref name="configFileName"/> whose JSON <paramref name="configJson"/> makes from the weights file's name and SHA-256.
    /// </summary>
    public static void Save(string folder, string configFileName, Func<string, string, string> configJson, IReadOnlyDictionary<string, Tensor> tensors)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        var routers = tensors;
        CheckFinite(routers, "the model's trainable weights");
        Directory.CreateDirectory(folder);
        string pending = Path.Combine(folder, $"{PendingPrefix}{Guid.NewGuid():N}{WeightsSuffix}");
        try
        {
            SafeTensorsWriter.Save(pending, routers, new Dictionary<string, string>(StringComparer.Ordinal) { ["config"] = configFileName });
            string sha = Sha256(pending);
            string weightsFile = $"{WeightsPrefix}{sha[..16]}{WeightsSuffix}";
            File.Move(pending, Path.Combine(folder, weightsFile), overwrite: true);

            // The weights' new name must be on the device before the configuration naming it (after a power loss the
            // configuration could otherwise name a file the folder does not list).
            Durability.FlushFolder(folder);
            byte[] config = Encoding.UTF8.GetBytes(configJson(weightsFile, sha));
            SafeTensorsWriter.WriteAtomically(Path.Combine(folder, configFileName), stream => stream.Write(config));

            // The new configuration is in place: weights files it does not name, and leftovers of killed saves (pending
            // weights, their temporary files ".{pending}.GUID.tmp", the configuration's ".{config}.GUID.tmp"), go.
            foreach (var file in Directory.EnumerateFiles(folder))
            {
                string name = Path.GetFileName(file);
                bool staleWeights = name.StartsWith(WeightsPrefix, StringComparison.Ordinal) && name.EndsWith(WeightsSuffix, StringComparison.Ordinal) && name != weightsFile;
                bool leftover = name.StartsWith(PendingPrefix, StringComparison.Ordinal) || name.StartsWith("." + PendingPrefix, StringComparison.Ordinal)
                    || name.StartsWith("." + configFileName + ".", StringComparison.Ordinal);
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

    /// <summary>Reads the weights file a configuration names, checking its hash and every value; the caller owns the tensors.</summary>
    public static Dictionary<string, Tensor> ReadWeights(string folder, string configFileName, string weightsFile, string expectedSha256)
    {
        if (weightsFile.IndexOfAny(['/', '\\']) >= 0 || weightsFile is "." or "..")
        {
            throw new InvalidDataException($"'{folder}': the weights file '{weightsFile}' named by {configFileName} must be a file name in the same folder.");
        }

        string path = Path.Combine(folder, weightsFile);
        if (!File.Exists(path))
        {
            throw new InvalidDataException($"'{folder}': the weights '{weightsFile}' named by {configFileName} are missing.");
        }

        string sha = Sha256(path);
        if (!string.Equals(sha, expectedSha256, StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidDataException(
                $"'{path}' does not match {configFileName} (SHA-256 {sha[..12]}…, expected {expectedSha256[..Math.Min(12, expectedSha256.Length)]}…): the folder mixes two saves or the file is corrupt.");
        }

        var routers = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var file = SafeTensorsFile.Open(path);
            foreach (var name in file.Names)
            {
                routers[name] = LoadTensor(file, name, path);
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

    /// <summary>
    /// Parses a configuration JSON (duplicate keys refused) after checking every string and key for lone surrogate escapes,
    /// which <see cref="JsonNode"/> would only report later, as an <see cref="InvalidOperationException"/>, when the value is read.
    /// </summary>
    /// <exception cref="JsonException">The text is not valid JSON, repeats a key or holds a lone surrogate escape.</exception>
    public static JsonNode? ParseConfig(string path)
    {
        string text = File.ReadAllText(path);
        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(text), new JsonReaderOptions { MaxDepth = 64 });
        while (reader.Read())
        {
            if (reader.TokenType is JsonTokenType.PropertyName or JsonTokenType.String)
            {
                StrictJson.CheckEscapes(ref reader);
            }
        }

        return JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });
    }

    /// <summary>Loads one tensor of a trained-weights file; a dtype TorchSharp lacks is an <see cref="InvalidDataException"/> naming the file.</summary>
    public static Tensor LoadTensor(SafeTensorsFile file, string name, string path)
    {
        try
        {
            return file.Load(name);
        }
        catch (NotSupportedException e)
        {
            throw new InvalidDataException($"'{path}': {e.Message}", e);
        }
    }

    /// <summary>Throws naming the first tensor holding NaN or Inf.</summary>
    public static void CheckFinite(IReadOnlyDictionary<string, Tensor> tensors, string where)
    {
        foreach (var (name, tensor) in tensors.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            if (tensor.is_floating_point() && !tensor.isfinite().all().item<bool>())
            {
                throw new InvalidDataException($"{where}: tensor '{name}' contains NaN or Inf.");
            }
        }
    }

    private static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
