using System.Text;
using WeightEnsembling.Interop;

namespace WeightEnsembling.Tests.Interop;

[TestFixture]
public sealed class PickleGlobalScannerTests
{
    private static byte[] Bytes(params object[] parts)
    {
        var bytes = new List<byte>();
        foreach (var part in parts)
        {
            switch (part)
            {
                case byte b: bytes.Add(b); break;
                case int i: bytes.Add((byte)i); break;
                case string s: bytes.AddRange(Encoding.ASCII.GetBytes(s)); break;
            }
        }

        return bytes.ToArray();
    }

    // SHORT_BINUNICODE
    private static object[] Str(string s) => [0x8c, s.Length, s];

    private static IReadOnlySet<string> Scan(byte[] pickle, Func<string, bool> allowed) =>
        PickleGlobalScanner.CheckGlobals(pickle, "f.pt", "archive/data.pkl", allowed);

    [Test]
    public void Inst_IsCheckedLikeGlobal()
    {
        var error = Assert.Throws<TorchCheckpointFormatException>(() => Scan(Bytes("(", "ios\nsystem\n", "."), _ => false));
        Assert.That(error!.ForbiddenGlobal, Is.EqualTo("os.system"));
    }

    [Test]
    public void StackGlobal_ResolvedThroughTheMemo_IsChecked()
    {
        // "builtins" BINPUT 0, "eval" BINPUT 1, POP, POP, BINGET 0, BINGET 1, STACK_GLOBAL
        var pickle = Bytes([0x80, 4, .. Str("builtins"), (int)'q', 0, .. Str("eval"), (int)'q', 1, "0", "0", (int)'h', 0, (int)'h', 1, 0x93, "."]);
        var error = Assert.Throws<TorchCheckpointFormatException>(() => Scan(pickle, _ => false));
        Assert.That(error!.ForbiddenGlobal, Is.EqualTo("builtins.eval"));
        Assert.That(Scan(pickle, _ => true), Is.EquivalentTo(new[] { "builtins.eval" }));
    }

    [Test]
    public void StackGlobal_WhoseOperandsAreNotFreshStrings_IsRefused()
    {
        // "os", "system", "x", POP, STACK_GLOBAL: the top two are "os", "system" but the scanner cannot be sure after a pop.
        var pickle = Bytes([0x80, 4, .. Str("os"), .. Str("system"), .. Str("x"), "0", 0x93, "."]);
        var error = Assert.Throws<TorchCheckpointFormatException>(() => Scan(pickle, _ => true));
        Assert.That(error!.Message, Does.Contain("STACK_GLOBAL").And.Contain("f.pt"));
    }

    [TestCase(0x82)]
    [TestCase(0x83)]
    [TestCase(0x84)]
    public void ExtensionRegistry_IsRefused(int opcode)
    {
        var pickle = Bytes(0x80, 2, opcode, 1, 0, 0, 0, ".");
        var error = Assert.Throws<TorchCheckpointFormatException>(() => Scan(pickle, _ => true));
        Assert.That(error!.Message, Does.Contain("extension registry"));
    }

    [Test]
    public void TruncatedPickle_IsCorrupt()
    {
        var pickle = Bytes([0x80, 4, 0x8c, 20, "short"]);
        var error = Assert.Throws<TorchCheckpointFormatException>(() => Scan(pickle, _ => true));
        Assert.That(error!.Message, Does.Contain("truncated").And.Contain("archive/data.pkl"));
    }

    [Test]
    public void UnknownOpcode_IsCorrupt()
    {
        var error = Assert.Throws<TorchCheckpointFormatException>(() => Scan(Bytes(0x80, 2, 0xff, "."), _ => true));
        Assert.That(error!.Message, Does.Contain("0xff"));
    }
}
