using System.Text.RegularExpressions;

namespace WeightEnsembling.SafeTensors;

/// <summary>
/// Replaces the files of a folder as a whole: a reader (or a crash) sees every file of the previous save or every file
/// of the new one, never a mixture.
/// </summary>
/// <remarks>
/// <para>Use: <c>using var writer = AtomicFolderWriter.Begin(folder, supersedes);</c> write each file under
/// <see cref="PathFor"/> (or with <see cref="WriteFile"/>), then <see cref="Commit"/>. Disposing without committing deletes
/// what was written and leaves the folder as it was.</para>
/// <para>How: the files go to a fresh hidden sibling folder <c>.NAME.wemoe-staging-GUID</c>. <see cref="Commit"/> carries
/// over every entry of the current folder that the save does not write and that <c>supersedes</c> does not claim (files
/// as hard links, or copies where links are impossible; subfolders recursively), flushes every file and the staging
/// folder to the device (fsync), then exchanges the staging folder with the destination in one step
/// (<c>renameat2(RENAME_EXCHANGE)</c> on Linux; elsewhere two renames, with the old folder parked as
/// <c>.NAME.wemoe-old-GUID</c> in between and restored by the next <see cref="Begin"/> if a crash fell between them),
/// flushes the parent folder, and deletes the old files. Leftover staging and old folders of killed saves are deleted by
/// the next successful commit into the same destination.</para>
/// <para>Durable after <see cref="Commit"/> returns: the new files' contents, their names and the swap itself. Not
/// supported: two processes saving into the same folder at once (the later commit wins; the earlier one's staging
/// folder may be deleted as a leftover). Readers that hold files of the old folder open keep reading the old files.
/// The folder is a new directory after the commit: this process's working folder is moved along when it was inside,
/// other processes' are not, so the destination should be a folder dedicated to the saved artefact.</para>
/// </remarks>
internal sealed partial class AtomicFolderWriter : IDisposable
{
    private const string StagingMarker = ".wemoe-staging-";
    private const string OldMarker = ".wemoe-old-";

    private readonly Func<string, bool> _supersedes;
    private bool _committed;
    private bool _disposed;

    private AtomicFolderWriter(string destination, string stagingFolder, Func<string, bool> supersedes)
    {
        Destination = destination;
        StagingFolder = stagingFolder;
        _supersedes = supersedes;
    }

    /// <summary>The folder being replaced (full path).</summary>
    public string Destination { get; }

    /// <summary>The hidden sibling folder the new files are written to until <see cref="Commit"/>.</summary>
    public string StagingFolder { get; }

    /// <summary>
    /// Starts a save into <paramref name="destination"/> (created by the commit if missing).
    /// </summary>
    /// <param name="destination">The folder to replace.</param>
    /// <param name="supersedes">
    /// Names of entries of the current folder that this save replaces or removes even when it does not write them (e.g.
    /// the shards of an earlier save); every other entry it does not write is carried over.
    /// </param>
    public static AtomicFolderWriter Begin(string destination, Func<string, bool> supersedes)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(destination);
        ArgumentNullException.ThrowIfNull(supersedes);
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(destination));
        var parent = Path.GetDirectoryName(full) ?? throw new ArgumentException($"'{full}' has no parent folder.", nameof(destination));
        Directory.CreateDirectory(parent);
        RestoreParkedFolder(full);
        if (File.Exists(full))
        {
            throw new IOException($"'{full}' is a file, not a folder.");
        }
        var staging = Path.Combine(parent, $".{Path.GetFileName(full)}{StagingMarker}{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        return new AtomicFolderWriter(full, staging, supersedes);
    }

    /// <summary>The staging path of a file of the new folder.</summary>
    /// <param name="fileName">A plain file name (no folder part).</param>
    public string PathFor(string fileName)
    {
        ArgumentException.ThrowIfNullOrEmpty(fileName);
        if (Path.GetFileName(fileName) != fileName || fileName is "." or "..")
        {
            throw new ArgumentException($"'{fileName}' is not a plain file name.", nameof(fileName));
        }
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Path.Combine(StagingFolder, fileName);
    }

    /// <summary>Writes one file of the new folder.</summary>
    /// <param name="fileName">A plain file name.</param>
    /// <param name="write">Writes the content.</param>
    public void WriteFile(string fileName, Action<FileStream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        using var stream = new FileStream(PathFor(fileName), FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 16);
        write(stream);
    }

    /// <summary>Flushes the new files and swaps them in as the destination's content (see the remarks).</summary>
    public void Commit()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_committed)
        {
            throw new InvalidOperationException("The folder was already committed.");
        }
        if (Directory.Exists(Destination))
        {
            CarryOver(Destination, StagingFolder, top: true);
        }
        FlushTree(StagingFolder);

        var parent = Path.GetDirectoryName(Destination)!;
        var workingFolder = Environment.CurrentDirectory;
        var workingInside = workingFolder == Destination
            || workingFolder.StartsWith(Destination + Path.DirectorySeparatorChar, StringComparison.Ordinal);
        string? old = null;
        if (!Directory.Exists(Destination))
        {
            Directory.Move(StagingFolder, Destination);
        }
        else if (Durability.TryExchange(StagingFolder, Destination))
        {
            old = StagingFolder; // Now holds the previous files.
        }
        else
        {
            old = Path.Combine(parent, $".{Path.GetFileName(Destination)}{OldMarker}{Guid.NewGuid():N}");
            Directory.Move(Destination, old);
            Directory.Move(StagingFolder, Destination);
        }
        Durability.FlushFolder(parent);
        _committed = true;
        if (workingInside && Directory.Exists(workingFolder))
        {
            // The process's working folder was the replaced one (or inside it): move it to the same path in the new folder.
            Environment.CurrentDirectory = workingFolder;
        }

        if (old is not null)
        {
            TryDelete(old);
        }
        DeleteLeftovers();
    }

    /// <summary>Deletes the staging folder unless committed.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (!_committed)
        {
            TryDelete(StagingFolder);
        }
    }

    /// <summary>Whether a name is a temporary file of <see cref="SafeTensorsWriter"/>'s single-file writes (<c>.NAME.GUID.tmp</c>).</summary>
    internal static bool IsTemporaryFileName(string name) => TempFilePattern().IsMatch(name);

    [GeneratedRegex(@"^\..+\.[0-9a-f]{32}\.tmp$", RegexOptions.CultureInvariant)]
    private static partial Regex TempFilePattern();

    private void CarryOver(string from, string to, bool top)
    {
        foreach (var entry in new DirectoryInfo(from).EnumerateFileSystemInfos())
        {
            var name = entry.Name;
            var target = Path.Combine(to, name);
            if ((top && _supersedes(name)) || IsTemporaryFileName(name) || Path.Exists(target))
            {
                continue;
            }
            if (entry.LinkTarget is { } linkTarget)
            {
                if (entry is DirectoryInfo)
                {
                    Directory.CreateSymbolicLink(target, linkTarget);
                }
                else
                {
                    File.CreateSymbolicLink(target, linkTarget);
                }
            }
            else if (entry is DirectoryInfo)
            {
                Directory.CreateDirectory(target);
                CarryOver(entry.FullName, target, top: false);
            }
            else if (!Durability.TryHardLink(entry.FullName, target))
            {
                File.Copy(entry.FullName, target);
            }
        }
    }

    private static void FlushTree(string folder)
    {
        foreach (var entry in new DirectoryInfo(folder).EnumerateFileSystemInfos())
        {
            if (entry.LinkTarget is not null)
            {
                continue;
            }
            if (entry is DirectoryInfo)
            {
                FlushTree(entry.FullName);
            }
            else
            {
                Durability.FlushFile(entry.FullName);
            }
        }
        Durability.FlushFolder(folder);
    }

    /// <summary>Puts back a destination parked by a fallback swap that a crash interrupted.</summary>
    private static void RestoreParkedFolder(string destination)
    {
        if (Directory.Exists(destination) || File.Exists(destination))
        {
            return;
        }
        var parent = Path.GetDirectoryName(destination)!;
        var parked = Directory.EnumerateDirectories(parent, $".{Path.GetFileName(destination)}{OldMarker}*")
            .Select(p => new DirectoryInfo(p))
            .OrderByDescending(d => d.LastWriteTimeUtc)
            .FirstOrDefault();
        if (parked is not null)
        {
            Directory.Move(parked.FullName, destination);
            Durability.FlushFolder(parent);
        }
    }

    private void DeleteLeftovers()
    {
        var parent = Path.GetDirectoryName(Destination)!;
        var name = Path.GetFileName(Destination);
        foreach (var marker in new[] { StagingMarker, OldMarker })
        {
            foreach (var leftover in Directory.EnumerateDirectories(parent, $".{name}{marker}*"))
            {
                TryDelete(leftover);
            }
        }
    }

    private static void TryDelete(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
            // A leftover is deleted by the next successful commit.
        }
        catch (UnauthorizedAccessException)
        {
            // Same.
        }
    }
}
