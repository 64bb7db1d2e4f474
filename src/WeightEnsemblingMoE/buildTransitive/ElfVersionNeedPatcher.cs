using System.IO;
using System.Text;

// Compiled by MSBuild's RoslynCodeTaskFactory from WeightEnsemblingMoE.targets; not part of the library.
// Marks one symbol-version need of an ELF64 little-endian shared library as weak (VER_FLG_WEAK), so that the
// dynamic loader accepts the library on hosts whose libstdc++ lacks that version. See docs/libtorch-loading.md.
public class WemoePatchElfVersionNeed : Microsoft.Build.Utilities.Task
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    [Microsoft.Build.Framework.Required]
    public Microsoft.Build.Framework.ITaskItem[] Files { get; set; } = System.Array.Empty<Microsoft.Build.Framework.ITaskItem>();

    [Microsoft.Build.Framework.Required]
    public string VersionName { get; set; } = "";

    /// <summary>'auto' patches only when the build host's libstdc++ lacks the version; 'true' always.</summary>
    [Microsoft.Build.Framework.Required]
    public string Mode { get; set; } = "auto";

    public override bool Execute()
    {
        if (string.Equals(Mode, "auto", System.StringComparison.OrdinalIgnoreCase) && HostProvides(VersionName))
        {
            Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Low,
                "libstdc++ on this host provides " + VersionName + "; libLibTorchSharp.so left as it is.");
            return true;
        }

        foreach (var item in Files)
        {
            string path = item.GetMetadata("FullPath");
            try
            {
                byte[] image = File.ReadAllBytes(path);
                int changed = MarkWeak(image, VersionName);
                if (changed < 0)
                {
                    Log.LogWarning("WEMOE001: " + path + " is not an ELF64 little-endian file with a .gnu.version_r section; not patched.");
                    continue;
                }
                if (changed == 0)
                {
                    continue; // Already weak, or no such need: nothing to write.
                }
                string temp = path + ".wemoe-patch.tmp";
                File.WriteAllBytes(temp, image);
                // Replace the copy by a rename, so a hard link into a package cache is never written through.
                File.Replace(temp, path, null);
                Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Normal,
                    "Marked the " + VersionName + " need of " + path + " weak (" + changed + " entr" + (changed == 1 ? "y" : "ies") + ").");
            }
            catch (System.Exception e) when (e is IOException || e is System.UnauthorizedAccessException)
            {
                Log.LogWarning("WEMOE002: could not patch " + path + ": " + e.Message);
            }
        }
        return !Log.HasLoggedErrors;
    }

    /// <summary>Returns how many needs were changed, 0 when none needed it, -1 when the file is not a patchable ELF.</summary>
    private static int MarkWeak(byte[] image, string versionName)
    {
        if (image.Length < 64 || image[0] != 0x7f || image[1] != (byte)'E' || image[2] != (byte)'L' || image[3] != (byte)'F'
            || image[4] != 2 /* ELFCLASS64 */ || image[5] != 1 /* little-endian */)
        {
            return -1;
        }
        long shoff = (long)U64(image, 0x28);
        int shentsize = U16(image, 0x3A);
        int shnum = U16(image, 0x3C);
        if (shoff <= 0 || shentsize < 64 || shoff + (long)shnum * shentsize > image.Length)
        {
            return -1;
        }
        byte[] wanted = Encoding.ASCII.GetBytes(versionName);
        for (int s = 0; s < shnum; s++)
        {
            long sh = shoff + (long)s * shentsize;
            if (U32(image, sh + 4) != ShtGnuVerneed)
            {
                continue;
            }
            long offset = (long)U64(image, sh + 0x18);
            long size = (long)U64(image, sh + 0x20);
            uint link = U32(image, sh + 0x28);
            uint count = U32(image, sh + 0x2C);
            if (link >= shnum || offset + size > image.Length)
            {
                return -1;
            }
            long strtab = (long)U64(image, shoff + (long)link * shentsize + 0x18);
            int changed = 0;
            long vn = offset;
            for (uint i = 0; i < count && vn + 16 <= offset + size; i++)
            {
                int auxCount = U16(image, vn + 2);
                long vna = vn + U32(image, vn + 8);
                for (int a = 0; a < auxCount && vna + 16 <= offset + size; a++)
                {
                    long name = strtab + U32(image, vna + 8);
                    if (NameEquals(image, name, wanted))
                    {
                        ushort flags = (ushort)U16(image, vna + 4);
                        if ((flags & VerFlgWeak) == 0)
                        {
                            flags |= VerFlgWeak;
                            image[vna + 4] = (byte)(flags & 0xff);
                            image[vna + 5] = (byte)(flags >> 8);
                            changed++;
                        }
                    }
                    uint nextAux = U32(image, vna + 12);
                    if (nextAux == 0) break;
                    vna += nextAux;
                }
                uint next = U32(image, vn + 12);
                if (next == 0) break;
                vn += next;
            }
            return changed;
        }
        return -1;
    }

    private static bool HostProvides(string versionName)
    {
        var candidates = new System.Collections.Generic.List<string>();
        string ldPath = System.Environment.GetEnvironmentVariable("LD_LIBRARY_PATH");
        if (!string.IsNullOrEmpty(ldPath))
        {
            foreach (string dir in ldPath.Split(':'))
            {
                if (dir.Length > 0) candidates.Add(Path.Combine(dir, "libstdc++.so.6"));
            }
        }
        foreach (string dir in new[] { "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                                       "/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib" })
        {
            candidates.Add(Path.Combine(dir, "libstdc++.so.6"));
        }
        byte[] wanted = Encoding.ASCII.GetBytes(versionName + "\0");
        foreach (string candidate in candidates)
        {
            if (!File.Exists(candidate)) continue;
            byte[] bytes = File.ReadAllBytes(candidate);
            return Contains(bytes, wanted);
        }
        return false; // No libstdc++ found where the loader looks first: patching is harmless.
    }

    private static bool Contains(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i++)
        {
            if (haystack[i] == needle[0] && NameEquals(haystack, i, needle, requireTerminator: false)) return true;
        }
        return false;
    }

    private static bool NameEquals(byte[] image, long at, byte[] wanted, bool requireTerminator = true)
    {
        if (at < 0 || at + wanted.Length > image.Length) return false;
        for (int i = 0; i < wanted.Length; i++)
        {
            if (image[at + i] != wanted[i]) return false;
        }
        return !requireTerminator || (at + wanted.Length < image.Length && image[at + wanted.Length] == 0);
    }

    private static int U16(byte[] b, long o) => b[o] | (b[o + 1] << 8);
    private static uint U32(byte[] b, long o) => (uint)(b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24));
    private static ulong U64(byte[] b, long o) => U32(b, o) | ((ulong)U32(b, o + 4) << 32);
}
