using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace WeightEnsembling.SafeTensors;

/// <summary>
/// fsync of files and folders, and the atomic exchange of two folders (Linux <c>renameat2(RENAME_EXCHANGE)</c>).
/// On Windows a folder cannot be flushed and the exchange is not available; the callers fall back.
/// </summary>
internal static partial class Durability
{
    private const int AtFdCwd = -100;
    private const uint RenameExchange = 2;
    private const int ReadOnlyDirectory = 0x10000; // O_RDONLY | O_DIRECTORY on Linux
    private const int ReadOnlyDirectoryMac = 0x100000; // O_RDONLY | O_DIRECTORY on macOS

    /// <summary>Flushes a file's data and metadata to the device.</summary>
    public static void FlushFile(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
            stream.Flush(flushToDisk: true);
            return;
        }
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        if (Fsync((int)handle.DangerousGetHandle()) != 0)
        {
            throw new IOException($"fsync of '{path}' failed (errno {Marshal.GetLastPInvokeError()}).");
        }
    }

    /// <summary>Flushes a folder's entries (names created, renamed or removed in it) to the device; nothing on Windows.</summary>
    public static void FlushFolder(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }
        var fd = Open(path, OperatingSystem.IsMacOS() ? ReadOnlyDirectoryMac : ReadOnlyDirectory);
        if (fd < 0)
        {
            throw new IOException($"Cannot open the folder '{path}' to flush it (errno {Marshal.GetLastPInvokeError()}).");
        }
        try
        {
            if (Fsync(fd) != 0)
            {
                throw new IOException($"fsync of the folder '{path}' failed (errno {Marshal.GetLastPInvokeError()}).");
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>Exchanges two existing paths atomically; false when the system or file system cannot.</summary>
    public static bool TryExchange(string first, string second)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }
        try
        {
            return RenameAt2(AtFdCwd, first, AtFdCwd, second, RenameExchange) == 0;
        }
        catch (EntryPointNotFoundException)
        {
            return false; // A C library older than glibc 2.28.
        }
    }

    /// <summary>Creates a hard link; false when the file system cannot (the caller copies instead).</summary>
    public static bool TryHardLink(string existing, string link)
    {
        if (OperatingSystem.IsWindows())
        {
            return false;
        }
        return Link(existing, link) == 0;
    }

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "renameat2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int RenameAt2(int oldDirFd, string oldPath, int newDirFd, string newPath, uint flags);

    [LibraryImport("libc", EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Link(string existing, string link);
}
