using System.Buffers.Binary;
using System.Text;

namespace WeightEnsembling.Interop;

/// <summary>
/// Walks a pickle's opcodes (protocols 0–5, as Python's <c>pickletools</c> documents them) without executing any of
/// them, and collects every global it references: <c>GLOBAL</c> and <c>INST</c> (names inline), <c>STACK_GLOBAL</c>
/// (names from the two strings pushed just before, directly or through the memo). Extension-registry opcodes
/// (<c>EXT1/2/4</c>) and a <c>STACK_GLOBAL</c> whose operands are not such strings are refused, since the global they
/// name cannot be known without running the pickle. A truncated pickle (no <c>STOP</c>) or an unknown opcode is corrupt.
/// </summary>
internal static class PickleGlobalScanner
{
    /// <summary>Checks every global of <paramref name="pickle"/> against <paramref name="isAllowed"/>.</summary>
    /// <exception cref="TorchCheckpointFormatException">A global is not allowed, cannot be resolved, or the pickle is corrupt.</exception>
    public static IReadOnlySet<string> CheckGlobals(ReadOnlySpan<byte> pickle, string file, string entry, Func<string, bool> isAllowed)
    {
        var globals = new HashSet<string>(StringComparer.Ordinal);
        var memo = new Dictionary<long, string?>();
        string? previous = null; // the value pushed before the top, when both are strings
        string? top = null;      // the value on top of the stack, when it is a string pushed by the last push
        int pos = 0;

        void Push(string? value)
        {
            previous = top;
            top = value;
        }

        void Global(string name, int at)
        {
            if (!isAllowed(name))
            {
                throw new TorchCheckpointFormatException(file, name,
                    $"'{entry}' references the Python global '{name}' (opcode at byte {at}), which is not plain tensor data. "
                    + "Only the globals PyTorch's torch.load(weights_only=True) allows and TorchSharp.PyBridge can rebuild are accepted "
                    + "(collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, torch.*Storage); "
                    + "nothing was unpickled.");
            }

            globals.Add(name);
        }

        while (true)
        {
            if (pos >= pickle.Length)
            {
                throw Corrupt(file, entry, "the pickle ends without a STOP opcode (truncated)");
            }

            int at = pos;
            byte op = pickle[pos++];
            switch (op)
            {
                case (byte)'.': // STOP
                    return globals;
                case (byte)'(': case (byte)'0': case (byte)'1': case (byte)'2': case (byte)'N': case (byte)'Q': case (byte)'R':
                case (byte)'a': case (byte)'b': case (byte)'d': case (byte)'}': case (byte)'e': case (byte)'l': case (byte)']':
                case (byte)'o': case (byte)'s': case (byte)'t': case (byte)')': case (byte)'u':
                case 0x81: case 0x85: case 0x86: case 0x87: case 0x88: case 0x89: case 0x8f: case 0x90: case 0x91: case 0x92:
                case 0x97: case 0x98:
                    Push(null);
                    break;
                case (byte)'F': case (byte)'I': case (byte)'L': case (byte)'P': case (byte)'S':
                    Line(pickle, ref pos, file, entry);
                    Push(null);
                    break;
                case (byte)'V': // UNICODE (raw-unicode-escape line)
                    Push(Line(pickle, ref pos, file, entry));
                    break;
                case (byte)'J': Skip(pickle, ref pos, 4, file, entry); Push(null); break; // BININT
                case (byte)'K': Skip(pickle, ref pos, 1, file, entry); Push(null); break; // BININT1
                case (byte)'M': Skip(pickle, ref pos, 2, file, entry); Push(null); break; // BININT2
                case (byte)'G': Skip(pickle, ref pos, 8, file, entry); Push(null); break; // BINFLOAT
                case (byte)'T': Skip(pickle, ref pos, Length(pickle, ref pos, 4, file, entry), file, entry); Push(null); break;
                case (byte)'U': Skip(pickle, ref pos, Length(pickle, ref pos, 1, file, entry), file, entry); Push(null); break;
                case (byte)'B': Skip(pickle, ref pos, Length(pickle, ref pos, 4, file, entry), file, entry); Push(null); break;
                case (byte)'C': Skip(pickle, ref pos, Length(pickle, ref pos, 1, file, entry), file, entry); Push(null); break;
                case 0x8a: Skip(pickle, ref pos, Length(pickle, ref pos, 1, file, entry), file, entry); Push(null); break; // LONG1
                case 0x8b: Skip(pickle, ref pos, Length(pickle, ref pos, 4, file, entry), file, entry); Push(null); break; // LONG4
                case 0x8e: case 0x96: Skip(pickle, ref pos, Length(pickle, ref pos, 8, file, entry), file, entry); Push(null); break;
                case (byte)'X': // BINUNICODE
                    Push(Utf8(pickle, ref pos, Length(pickle, ref pos, 4, file, entry), file, entry));
                    break;
                case 0x8c: // SHORT_BINUNICODE
                    Push(Utf8(pickle, ref pos, Length(pickle, ref pos, 1, file, entry), file, entry));
                    break;
                case 0x8d: // BINUNICODE8
                    Push(Utf8(pickle, ref pos, Length(pickle, ref pos, 8, file, entry), file, entry));
                    break;
                case (byte)'c': // GLOBAL module\nname\n
                    {
                        string module = Line(pickle, ref pos, file, entry);
                        string name = Line(pickle, ref pos, file, entry);
                        Global($"{module}.{name}", at);
                        Push(null);
                        break;
                    }
                case (byte)'i': // INST module\nname\n (instantiates the class)
                    {
                        string module = Line(pickle, ref pos, file, entry);
                        string name = Line(pickle, ref pos, file, entry);
                        Global($"{module}.{name}", at);
                        Push(null);
                        break;
                    }
                case 0x93: // STACK_GLOBAL
                    if (previous is null || top is null)
                    {
                        throw new TorchCheckpointFormatException(file, null,
                            $"'{entry}' has a STACK_GLOBAL (byte {at}) whose module and name are not strings pushed just before it; "
                            + "the global it names cannot be checked without running the pickle, so it is refused.");
                    }

                    Global($"{previous}.{top}", at);
                    Push(null);
                    break;
                case 0x82: case 0x83: case 0x84:
                    throw new TorchCheckpointFormatException(file, null,
                        $"'{entry}' uses the copyreg extension registry (EXT opcode at byte {at}), which names a global that "
                        + "cannot be checked; refused.");
                case (byte)'g': // GET
                    Push(memo.GetValueOrDefault(Index(Line(pickle, ref pos, file, entry), file, entry)));
                    break;
                case (byte)'h': // BINGET
                    Push(memo.GetValueOrDefault(Length(pickle, ref pos, 1, file, entry)));
                    break;
                case (byte)'j': // LONG_BINGET
                    Push(memo.GetValueOrDefault(Length(pickle, ref pos, 4, file, entry)));
                    break;
                case (byte)'p': // PUT (stores the top, does not push)
                    memo[Index(Line(pickle, ref pos, file, entry), file, entry)] = top;
                    break;
                case (byte)'q': // BINPUT
                    memo[Length(pickle, ref pos, 1, file, entry)] = top;
                    break;
                case (byte)'r': // LONG_BINPUT
                    memo[Length(pickle, ref pos, 4, file, entry)] = top;
                    break;
                case 0x94: // MEMOIZE
                    memo[memo.Count] = top;
                    break;
                case 0x80: // PROTO
                    Skip(pickle, ref pos, 1, file, entry);
                    break;
                case 0x95: // FRAME
                    Skip(pickle, ref pos, 8, file, entry);
                    break;
                default:
                    throw Corrupt(file, entry, $"unknown pickle opcode 0x{op:x2} at byte {at}");
            }
        }
    }

    private static TorchCheckpointFormatException Corrupt(string file, string entry, string problem) =>
        new(file, null, $"'{entry}' is not a valid pickle: {problem}.");

    private static void Skip(ReadOnlySpan<byte> pickle, ref int pos, long count, string file, string entry)
    {
        if (count < 0 || count > pickle.Length - pos)
        {
            throw Corrupt(file, entry, $"an argument at byte {pos} runs past the end of the pickle (truncated)");
        }

        pos += (int)count;
    }

    private static long Length(ReadOnlySpan<byte> pickle, ref int pos, int width, string file, string entry)
    {
        int start = pos;
        Skip(pickle, ref pos, width, file, entry);
        var bytes = pickle.Slice(start, width);
        return width switch
        {
            1 => bytes[0],
            2 => BinaryPrimitives.ReadUInt16LittleEndian(bytes),
            4 => BinaryPrimitives.ReadUInt32LittleEndian(bytes),
            _ => (long)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(bytes), long.MaxValue),
        };
    }

    private static string Utf8(ReadOnlySpan<byte> pickle, ref int pos, long count, string file, string entry)
    {
        int start = pos;
        Skip(pickle, ref pos, count, file, entry);
        return Encoding.UTF8.GetString(pickle.Slice(start, (int)count));
    }

    private static string Line(ReadOnlySpan<byte> pickle, ref int pos, string file, string entry)
    {
        int end = pickle[pos..].IndexOf((byte)'\n');
        if (end < 0)
        {
            throw Corrupt(file, entry, $"a text argument at byte {pos} has no terminating newline (truncated)");
        }

        string text = Encoding.Latin1.GetString(pickle.Slice(pos, end));
        pos += end + 1;
        return text;
    }

    private static long Index(string text, string file, string entry) =>
        long.TryParse(text, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out long index)
            ? index
            : throw Corrupt(file, entry, $"memo index '{text}' is not an integer");
}
