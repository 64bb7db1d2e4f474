using System.Diagnostics;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;

namespace WeightEnsembling.Tests.SafeTensors.Reliability;

/// <summary>
/// A child process (this test assembly's own <see cref="HelperProgram"/>) saves two states alternately into one folder
/// and is SIGKILLed at random moments; afterwards the folder must hold the whole of one state, and the next successful
/// save must leave no staging or temporary file behind.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class AtomicSaveKillTests
{
    private const int ShardedKills = 10;

    private const int ClipKills = 6;

    private TempFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new TempFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    private static Process StartChild(string mode, string folder)
    {
        var assembly = typeof(HelperProgram).Assembly.Location;
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { "exec", assembly, "atomic-save", mode, folder })
        {
            info.ArgumentList.Add(arg);
        }
        return Process.Start(info)!;
    }

    /// <summary>Kills the child after it has completed <paramref name="savesFirst"/> saves plus a random delay (SIGKILL on Unix).</summary>
    internal static int RunAndKill(string mode, string folder, Random random)
    {
        using var child = StartChild(mode, folder);
        var savesFirst = random.Next(0, 3);
        for (var seen = 0; seen <= savesFirst; seen++)
        {
            var line = child.StandardOutput.ReadLine();
            if (line is null)
            {
                Assert.Fail($"The child exited early: {child.StandardError.ReadToEnd()}");
            }
        }
        Thread.Sleep(random.Next(0, 120));
        child.Kill(entireProcessTree: true);
        child.WaitForExit();
        return savesFirst;
    }

    [Test]
    public void SaveSharded_KilledAtRandomMoments_LeavesWholeOldOrWholeNewState()
    {
        var folder = Path.Combine(_folder.Path, "ckpt");
        var states = new[] { AtomicSaveLoop.ShardedState(0), AtomicSaveLoop.ShardedState(1) };
        var random = new Random(18);
        var seen = new HashSet<int>();
        for (var round = 0; round < ShardedKills; round++)
        {
            RunAndKill("sharded", folder, random);
            using var checkpoint = SafeTensorsCheckpoint.Open(folder, new SafeTensorsReadOptions { VerifyShardHashes = true });
            var which = checkpoint.Names.SequenceEqual(states[0].Keys.Order(StringComparer.Ordinal)) ? 0 : 1;
            seen.Add(which);
            Assert.That(checkpoint.Names, Is.EqualTo(states[which].Keys.Order(StringComparer.Ordinal)), $"round {round}");
            var loaded = checkpoint.LoadAll();
            foreach (var (name, tensor) in loaded)
            {
                Assert.That(tensor.equal(states[which][name]).all().item<bool>(), Is.True, $"round {round}, tensor {name}");
                tensor.Dispose();
            }
        }
        TestContext.Out.WriteLine($"states seen after kills: {string.Join(", ", seen)}");

        SafeTensorsWriter.SaveSharded(folder, states[0], AtomicSaveLoop.ShardBytes);
        AssertNoLeftovers(folder);
        foreach (var t in states.SelectMany(s => s.Values))
        {
            t.Dispose();
        }
    }

    [Test]
    public void ClipSaveTo_KilledAtRandomMoments_LeavesConfigAndWeightsOfOneSave()
    {
        var folder = Path.Combine(_folder.Path, "clip");
        var random = new Random(1818);
        for (var round = 0; round < ClipKills; round++)
        {
            RunAndKill("clip", folder, random);
            // Before the fix, SaveTo wrote the weights and config.json one after the other: a kill between them left
            // config.json of one architecture beside the weights of the other, and FromPretrained failed.
            using var model = ClipVisionModel.FromPretrained(folder);
            Assert.That(model.Config, Is.EqualTo(AtomicSaveLoop.ClipState(0)).Or.EqualTo(AtomicSaveLoop.ClipState(1)), $"round {round}");
        }
        using (var model = new ClipVisionModel(AtomicSaveLoop.ClipState(0)))
        {
            model.SaveTo(folder);
        }
        AssertNoLeftovers(folder);
    }

    private static void AssertNoLeftovers(string folder)
    {
        var parent = Path.GetDirectoryName(folder)!;
        Assert.That(Directory.GetFileSystemEntries(parent).Select(Path.GetFileName), Is.EqualTo(new[] { Path.GetFileName(folder) }),
            "no staging or parked folder beside the destination");
        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName).Where(n => n!.EndsWith(".tmp", StringComparison.Ordinal)), Is.Empty);
    }
}
