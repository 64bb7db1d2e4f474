namespace WeightEnsembling.World;

/// <summary>Checks that no pre-training image is also a task image, by the SHA-256 of the pixels.</summary>
public static class Disjointness
{
    /// <summary>Throws if a hash of <paramref name="pool"/> is among <paramref name="tasks"/> (named "task/split" → hash → file).</summary>
    /// <exception cref="InvalidDataException">An image is in both; the message names the pool file, the task, the split and its file.</exception>
    public static void Check(IReadOnlyDictionary<string, string> pool, IReadOnlyDictionary<string, IReadOnlyDictionary<string, string>> tasks)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(tasks);
        foreach (var (split, hashes) in tasks)
        {
            foreach (var (hash, file) in hashes)
            {
                if (pool.TryGetValue(hash, out string? poolFile))
                {
                    throw new InvalidDataException(
                        $"The pre-training pool is not disjoint from {split}: '{poolFile}' and '{file}' are the same image (SHA-256 {hash}).");
                }
            }
        }
    }

    /// <summary>The SHA-256 of an image's RGB pixels and size, hex.</summary>
    public static string Hash(Images.RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var header = BitConverter.GetBytes(image.Width).Concat(BitConverter.GetBytes(image.Height)).ToArray();
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(header.Concat(image.Pixels).ToArray()));
    }
}
