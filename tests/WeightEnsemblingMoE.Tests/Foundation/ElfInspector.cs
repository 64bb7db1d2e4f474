using System.Buffers.Binary;
using System.Text;

namespace WeightEnsembling.Tests.Foundation;

/// <summary>An independent reader of ELF64 version needs, to check what the build-time patch wrote.</summary>
internal static class ElfInspector
{
    /// <summary>True when the need is weak, false when strong, null when the library has no such need.</summary>
    public static bool? IsVersionNeedWeak(byte[] elf, string version)
    {
        var span = elf.AsSpan();
        long shoff = (long)BinaryPrimitives.ReadUInt64LittleEndian(span[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(span[0x3A..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(span[0x3C..]);
        for (int s = 0; s < shnum; s++)
        {
            var header = span[(int)(shoff + s * shentsize)..];
            if (BinaryPrimitives.ReadUInt32LittleEndian(header[4..]) != 0x6ffffffe)
            {
                continue;
            }
            int offset = (int)BinaryPrimitives.ReadUInt64LittleEndian(header[0x18..]);
            int link = (int)BinaryPrimitives.ReadUInt32LittleEndian(header[0x28..]);
            int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(header[0x2C..]);
            int strtab = (int)BinaryPrimitives.ReadUInt64LittleEndian(span[(int)(shoff + link * shentsize + 0x18)..]);
            int vn = offset;
            for (int i = 0; i < count; i++)
            {
                int auxCount = BinaryPrimitives.ReadUInt16LittleEndian(span[(vn + 2)..]);
                int vna = vn + (int)BinaryPrimitives.ReadUInt32LittleEndian(span[(vn + 8)..]);
                for (int a = 0; a < auxCount; a++)
                {
                    int name = strtab + (int)BinaryPrimitives.ReadUInt32LittleEndian(span[(vna + 8)..]);
                    int end = span[name..].IndexOf((byte)0);
                    if (Encoding.ASCII.GetString(span.Slice(name, end)) == version)
                    {
                        return (BinaryPrimitives.ReadUInt16LittleEndian(span[(vna + 4)..]) & 0x2) != 0;
                    }
                    vna += (int)BinaryPrimitives.ReadUInt32LittleEndian(span[(vna + 12)..]);
                }
                vn += (int)BinaryPrimitives.ReadUInt32LittleEndian(span[(vn + 12)..]);
            }
        }
        return null;
    }

    public static bool HostLibStdCxxProvides(string version)
    {
        foreach (string dir in new[] { "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64" })
        {
            string path = Path.Combine(dir, "libstdc++.so.6");
            if (File.Exists(path))
            {
                return File.ReadAllBytes(path).AsSpan().IndexOf(Encoding.ASCII.GetBytes(version + "\0")) >= 0;
            }
        }
        return false;
    }
}
