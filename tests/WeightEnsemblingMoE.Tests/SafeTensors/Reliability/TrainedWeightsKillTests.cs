using System.Text.Json.Nodes;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Merging;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors.Reliability;

/// <summary>
/// Kill tests of the trained-weights writers (issue 18): a child process (<see cref="HelperProgram"/>, mode
/// <c>routers</c>, <c>adamerging</c> or <c>checkpoint</c>) saves two states of <see cref="TrainedWeightsStates"/>
/// alternately to one destination and is SIGKILLed at random moments. After each kill the destination must load as the
/// whole of one state, bit for bit; after the next successful save nothing but that save's files may remain.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class TrainedWeightsKillTests
{
    private const int Kills = 6;

    private TempFolder _folder = null!;
    private TrainedWeightsStates _states = null!;

    [SetUp]
    public void SetUp()
    {
        _folder = new TempFolder();
        _states = new TrainedWeightsStates();
    }

    [TearDown]
    public void TearDown()
    {
        _states.Dispose();
        _folder.Dispose();
    }

    private static bool SameTensors(IReadOnlyDictionary<string, Tensor> actual, IReadOnlyDictionary<string, Tensor> expected) =>
        actual.Keys.Order(StringComparer.Ordinal).SequenceEqual(expected.Keys.Order(StringComparer.Ordinal))
        && expected.All(e => actual[e.Key].dtype == e.Value.dtype && Upscaling.TinyClip.BitEqual(actual[e.Key], e.Value));

    private static void Dispose(IEnumerable<Tensor> tensors)
    {
        foreach (var tensor in tensors)
        {
            tensor.Dispose();
        }
    }

    [Test]
    public void UpscaledModelSavePretrained_KilledAtRandomMoments_LoadsAsWholeOldOrWholeNewSave()
    {
        var folder = Path.Combine(_folder.Path, "routers");
        var expected = new[] { RouterState(0), RouterState(1) };
        var random = new Random(1801);
        var seen = new HashSet<int>();
        for (var round = 0; round < Kills; round++)
        {
            AtomicSaveKillTests.RunAndKill("routers", folder, random);
            using var loaded = UpscaledModel.FromPretrained(folder, _states.Pool());
            var routers = loaded.RouterStateDict();
            var which = Array.FindIndex(expected, e => SameTensors(routers, e));
            Dispose(routers.Values);
            Assert.That(which, Is.GreaterThanOrEqualTo(0), $"round {round}: the loaded routers are neither of the two saves");
            Assert.That(loaded.Options.RouterDepth, Is.EqualTo(which == 0 ? 2 : 1), $"round {round}: configuration of one save, weights of the other");
            seen.Add(which);
        }

        TestContext.Out.WriteLine($"states seen after {Kills} kills: {string.Join(", ", seen)}");
        using (var model = _states.Upscaled(1))
        {
            model.SavePretrained(folder);
        }

        AssertOnlyOneSave(folder, UpscaledModelConfig.FileName);
        foreach (var state in expected)
        {
            Dispose(state.Values);
        }
    }

    [Test]
    public void AdaMergingSavePretrained_KilledAtRandomMoments_LoadsAsWholeOldOrWholeNewSave()
    {
        var folder = Path.Combine(_folder.Path, "adamerging");
        var expected = new Tensor[2];
        for (var i = 0; i < 2; i++)
        {
            using var model = _states.AdaMerging(i);
            expected[i] = model.MergeWeight.detach().clone();
        }

        var random = new Random(1802);
        var seen = new HashSet<int>();
        for (var round = 0; round < Kills; round++)
        {
            AtomicSaveKillTests.RunAndKill("adamerging", folder, random);
            using var loaded = AdaMergingModel.FromPretrained(folder, _states.Pool());
            var which = Array.FindIndex(expected, e => Upscaling.TinyClip.BitEqual(loaded.MergeWeight, e));
            Assert.That(which, Is.GreaterThanOrEqualTo(0), $"round {round}: the loaded coefficients are neither of the two saves");
            Assert.That(loaded.Options.Granularity, Is.EqualTo(which == 0 ? AdaMergingGranularity.TaskWise : AdaMergingGranularity.LayerWise), $"round {round}");
            seen.Add(which);
        }

        TestContext.Out.WriteLine($"states seen after {Kills} kills: {string.Join(", ", seen)}");
        using (var model = _states.AdaMerging(0))
        {
            model.SavePretrained(folder);
        }

        AssertOnlyOneSave(folder, AdaMergingModel.ConfigFileName);
        Dispose(expected);
    }

    [Test]
    public void TrainingCheckpointSave_KilledAtRandomMoments_LoadsAsWholeOldOrWholeNewCheckpoint()
    {
        var folder = Path.Combine(_folder.Path, "checkpoint");
        var expected = new Dictionary<string, Tensor>[2];
        for (var i = 0; i < 2; i++)
        {
            using var state = TrainingCheckpointState.Trained(_states, i);
            expected[i] = state.Snapshot(TrainedWeightsStates.Step(i));
        }
        Assert.That(SameTensors(expected[0], expected[1]), Is.False);

        var random = new Random(1803);
        var seen = new HashSet<int>();
        for (var round = 0; round < Kills; round++)
        {
            AtomicSaveKillTests.RunAndKill("checkpoint", folder, random);

            // A fresh model and Adam each round, so that nothing of an earlier round's load can pass for this one.
            using var target = TrainingCheckpointState.Fresh(_states);
            var step = target.Load(folder);
            var loaded = target.Snapshot(step);
            var which = Array.FindIndex(expected, e => SameTensors(loaded, e));
            var sameRouters = Array.FindIndex(expected, e => SameTensors(Routers(loaded), Routers(e)));
            Dispose(loaded.Values);
            Assert.That(which, Is.GreaterThanOrEqualTo(0),
                $"round {round}: routers, Adam moments and steps and the trainer's step are not all of one save (routers of state {sameRouters}, trainer step {step})");
            seen.Add(which);
        }

        TestContext.Out.WriteLine($"states seen after {Kills} kills: {string.Join(", ", seen)}");
        using (var last = TrainingCheckpointState.Trained(_states, 1))
        {
            last.Save(folder);
        }

        Assert.That(Directory.GetFileSystemEntries(_folder.Path).Select(Path.GetFileName), Is.EqualTo(new[] { "checkpoint" }),
            "no staging or parked folder beside the checkpoint after a successful save");
        var weightsFile = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, UpscaledModelConfig.FileName)))!["weights_file"]!.GetValue<string>();
        Assert.That(Directory.GetFileSystemEntries(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { UpscaledModelConfig.FileName, weightsFile, TrainingCheckpoint.OptimizerFileName, TrainerState.FileName }.Order(StringComparer.Ordinal)),
            "the checkpoint holds its four files and no temporary file of the killed saves");
        foreach (var state in expected)
        {
            Dispose(state.Values);
        }
    }

    private static Dictionary<string, Tensor> Routers(Dictionary<string, Tensor> snapshot) =>
        snapshot.Where(p => p.Key.StartsWith("vision_model.", StringComparison.Ordinal)).ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);

    private Dictionary<string, Tensor> RouterState(int which)
    {
        using var model = _states.Upscaled(which);
        return model.RouterStateDict();
    }

    /// <summary>The folder holds the configuration and the one weights file it names, nothing else; nothing beside the folder.</summary>
    private void AssertOnlyOneSave(string folder, string configFileName)
    {
        Assert.That(Directory.GetFileSystemEntries(_folder.Path).Select(Path.GetFileName), Is.EqualTo(new[] { Path.GetFileName(folder) }),
            "nothing beside the destination folder");
        var weightsFile = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, configFileName)))!["weights_file"]!.GetValue<string>();
        Assert.That(Directory.GetFileSystemEntries(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { configFileName, weightsFile }.Order(StringComparer.Ordinal)),
            "after a successful save the folder holds its configuration and the weights it names, no leftover of the killed saves");
    }
}
