using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;

namespace WeightEnsembling.World;

/// <summary>
/// Fetches pinned npm packages with the ordinary client (<c>npm pack name@version</c>) into a cache folder outside the
/// repository, checks each tarball against its pinned <c>sha512</c> integrity, and unpacks it once (to
/// <c>CACHE/unpacked/&lt;name&gt;-&lt;version&gt;/package</c>). A tarball already in the cache is only re-checked, so a
/// build without the network works once the cache is filled.
/// </summary>
public sealed class NpmPackageCache
{
    public NpmPackageCache(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        Folder = Path.GetFullPath(folder);
    }

    /// <summary>The cache folder (tarballs in <c>npm/</c>, unpacked packages in <c>unpacked/</c>).</summary>
    public string Folder { get; }

    /// <summary>The default cache: <c>$WEMOE_WORLD_CACHE</c>, else <c>~/.cache/wemoe-world</c>.</summary>
    public static string DefaultFolder =>
        Environment.GetEnvironmentVariable("WEMOE_WORLD_CACHE") is { Length: > 0 } env
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "wemoe-world");

    /// <summary>The tarball's file name as <c>npm pack</c> writes it (<c>@scope/name</c> → <c>scope-name-version.tgz</c>).</summary>
    public static string TarballName(NpmPackage package)
    {
        ArgumentNullException.ThrowIfNull(package);
        return $"{package.Name.TrimStart('@').Replace('/', '-')}-{package.Version}.tgz";
    }

    /// <summary>Returns the folder of the unpacked package (its <c>package.json</c> inside), fetching and checking it first if needed.</summary>
    /// <exception cref="InvalidDataException">The tarball's digest differs from the pinned integrity.</exception>
    public string Get(NpmPackage package)
    {
        ArgumentNullException.ThrowIfNull(package);
        Validate(package);
        string unpacked = Path.Combine(Folder, "unpacked", $"{package.Name.TrimStart('@').Replace('/', '-')}-{package.Version}");
        string done = Path.Combine(unpacked, ".integrity");
        if (File.Exists(done) && File.ReadAllText(done) == package.Integrity)
        {
            return Path.Combine(unpacked, "package");
        }

        string tarball = Path.Combine(Folder, "npm", TarballName(package));
        if (!File.Exists(tarball))
        {
            Pack(package, Path.Combine(Folder, "npm"));
        }

        CheckIntegrity(tarball, package);
        string temp = unpacked + ".tmp";
        if (Directory.Exists(temp))
        {
            Directory.Delete(temp, true);
        }

        Directory.CreateDirectory(temp);
        using (var gzip = new GZipStream(File.OpenRead(tarball), CompressionMode.Decompress))
        {
            TarFile.ExtractToDirectory(gzip, temp, overwriteFiles: true);
        }

        File.WriteAllText(Path.Combine(temp, ".integrity"), package.Integrity);
        if (Directory.Exists(unpacked))
        {
            Directory.Delete(unpacked, true);
        }

        Directory.Move(temp, unpacked);
        return Path.Combine(unpacked, "package");
    }

    /// <summary>Checks a tarball's sha512 digest against the package's pinned integrity.</summary>
    /// <exception cref="InvalidDataException">The digests differ.</exception>
    public static void CheckIntegrity(string tarball, NpmPackage package)
    {
        ArgumentNullException.ThrowIfNull(package);
        using var stream = File.OpenRead(tarball);
        string actual = "sha512-" + Convert.ToBase64String(SHA512.HashData(stream));
        if (actual != package.Integrity)
        {
            throw new InvalidDataException(
                $"'{tarball}' ({package.Name}@{package.Version}) has integrity {actual}; the config pins {package.Integrity}. Delete the file to fetch it again, or fix the pin.");
        }
    }

    private static void Validate(NpmPackage package)
    {
        if (string.IsNullOrWhiteSpace(package.Name) || string.IsNullOrWhiteSpace(package.Version))
        {
            throw new ArgumentException($"An npm package needs a name and an exact version (got '{package.Name}@{package.Version}').", nameof(package));
        }

        if (!System.Text.RegularExpressions.Regex.IsMatch(package.Version, @"^\d+\.\d+\.\d+$"))
        {
            throw new ArgumentException($"Package {package.Name}: version '{package.Version}' is not an exact version (x.y.z).", nameof(package));
        }

        if (!package.Integrity.StartsWith("sha512-", StringComparison.Ordinal))
        {
            throw new ArgumentException($"Package {package.Name}@{package.Version}: integrity '{package.Integrity}' is not a sha512 SRI string; copy dist.integrity from `npm view {package.Name}@{package.Version} dist.integrity`.", nameof(package));
        }
    }

    private static void Pack(NpmPackage package, string destination)
    {
        Directory.CreateDirectory(destination);
        var start = new ProcessStartInfo("npm")
        {
            WorkingDirectory = destination,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string arg in new[] { "pack", $"{package.Name}@{package.Version}", "--json", "--pack-destination", destination })
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException("Could not start npm; is Node.js installed?");
        string output = process.StandardOutput.ReadToEnd();
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"npm pack {package.Name}@{package.Version} failed (exit {process.ExitCode}): {error.Trim()}");
        }

        // npm reports the tarball's integrity too: a mismatch with the pin is caught here before the file is used.
        using var json = JsonDocument.Parse(output);
        string? reported = json.RootElement[0].GetProperty("integrity").GetString();
        if (reported != package.Integrity)
        {
            throw new InvalidDataException($"npm reports integrity {reported} for {package.Name}@{package.Version}; the config pins {package.Integrity}.");
        }
    }
}
