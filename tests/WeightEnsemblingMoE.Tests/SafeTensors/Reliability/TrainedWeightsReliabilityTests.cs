using System.Security.Cryptography;
using System.Text.Json.Nodes;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Merging;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors.Reliability;

/// <summary>
/// Minimal reproducers of what the kill and fuzz tests of the trained-weights writers found (issue 18): leftovers of
/// killed saves that the next save did not remove, a lone surrogate in a configuration, a dtype TorchSharp lacks in a
/// weights file, NaN in a training checkpoint's routers or Adam moments.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class TrainedWeightsReliabilityTests
{
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

    private static string Guid32() => Guid.NewGuid().ToString("N");

    [Test]
    public void SavePretrained_AfterKilledSaves_RemovesTheirTemporaryFiles()
    {
        var folder = _folder.File("routers");
        using var model = _states.Upscaled(0);
        model.SavePretrained(folder);
        // What a save killed inside SafeTensorsWriter.Save of its pending weights leaves (the temporary file of the
        // pending file); before the fix its name ("..weights-pending-…") escaped the clean-up.
        var leftovers = new[] { $"..weights-pending-{Guid32()}.safetensors.{Guid32()}.tmp", $".weights-pending-{Guid32()}.safetensors", $".upscaled_model_config.json.{Guid32()}.tmp" };
        foreach (var leftover in leftovers)
        {
            File.WriteAllBytes(Path.Combine(folder, leftover), [1, 2, 3]);
        }

        model.SavePretrained(folder);
        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName).Where(n => n!.StartsWith('.')), Is.Empty);
    }

    [Test]
    public void TrainingCheckpointSave_AfterKilledSaves_RemovesTheirStagingFolders()
    {
        var folder = _folder.File("checkpoint");
        using var first = TrainingCheckpointState.Trained(_states, 0);
        first.Save(folder);

        // What killed saves into this checkpoint leave (AtomicFolderWriter's staging folder, half written, and an old
        // folder parked by the two-rename fallback) and what killed saves into another folder leave.
        var ours = new[] { $".checkpoint.wemoe-staging-{Guid32()}", $".checkpoint.wemoe-old-{Guid32()}" };
        var theirs = new[] { $".other.wemoe-staging-{Guid32()}", $".other.wemoe-old-{Guid32()}" };
        foreach (var leftover in ours.Concat(theirs))
        {
            Directory.CreateDirectory(_folder.File(leftover));
            File.WriteAllBytes(Path.Combine(_folder.File(leftover), TrainingCheckpoint.OptimizerFileName), [1, 2, 3]);
        }

        using var second = TrainingCheckpointState.Trained(_states, 1);
        second.Save(folder);

        Assert.That(ours.Where(l => Path.Exists(_folder.File(l))), Is.Empty, "the leftovers of killed saves of this checkpoint are removed");
        Assert.That(theirs.Where(l => Directory.Exists(_folder.File(l))), Is.EqualTo(theirs), "another target's leftovers are not ours to remove");
        Assert.That(Directory.GetFileSystemEntries(_folder.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(theirs.Append("checkpoint").Order(StringComparer.Ordinal)));
        using var target = TrainingCheckpointState.Fresh(_states);
        Assert.That(target.Load(folder), Is.EqualTo(TrainedWeightsStates.Step(1)), "the checkpoint is the second save");
    }

    [TestCase("router", float.NaN)]
    [TestCase("router", float.PositiveInfinity)]
    [TestCase("exp_avg", float.NaN)]
    [TestCase("exp_avg_sq", float.PositiveInfinity)]
    public void TrainingCheckpointLoad_NonFiniteRouterOrMoment_ThrowsNamingFileAndTensor(string where, float value)
    {
        var folder = _folder.File("checkpoint");
        using (var saved = TrainingCheckpointState.Trained(_states, 1))
        {
            saved.Save(folder);
        }

        string path;
        string victim;
        if (where == "router")
        {
            // The weights file is signed by the configuration: re-sign the poisoned file, as a buggy writer would.
            var configPath = Path.Combine(folder, UpscaledModelConfig.FileName);
            var config = JsonNode.Parse(File.ReadAllText(configPath))!;
            var weightsPath = Path.Combine(folder, config["weights_file"]!.GetValue<string>());
            victim = Poison(weightsPath, n => true, value);
            var bytes = File.ReadAllBytes(weightsPath);
            File.Delete(weightsPath);
            var sha = Convert.ToHexStringLower(SHA256.HashData(bytes));
            path = Path.Combine(folder, $"weights-{sha[..16]}.safetensors");
            File.WriteAllBytes(path, bytes);
            config["weights_file"] = Path.GetFileName(path);
            config["weights_sha256"] = sha;
            File.WriteAllText(configPath, config.ToJsonString());
        }
        else
        {
            path = Path.Combine(folder, TrainingCheckpoint.OptimizerFileName);
            victim = Poison(path, n => n.StartsWith(where + ".", StringComparison.Ordinal), value);
        }

        using var target = TrainingCheckpointState.Trained(_states, 0);
        var before = target.Snapshot(0);
        // Before the fix a NaN moment loaded, and the next Adam step turned the router it updates into NaN.
        var e = Assert.Throws<InvalidDataException>(() => target.Load(folder));
        Assert.That(e!.Message, Does.Contain(path).And.Contain(victim).And.Contain("NaN or Inf"));
        var after = target.Snapshot(0);
        Assert.That(before.All(p => Upscaling.TinyClip.BitEqual(after[p.Key], p.Value)), Is.True, "the model and the optimizer are unchanged");
        foreach (var t in before.Values.Concat(after.Values))
        {
            t.Dispose();
        }
    }

    [Test]
    public void TrainingCheckpointLoad_LoneSurrogateInTrainerState_ThrowsInvalidDataExceptionNamingFile()
    {
        var folder = _folder.File("checkpoint");
        using var state = TrainingCheckpointState.Trained(_states, 0);
        state.Save(folder);
        var path = Path.Combine(folder, TrainerState.FileName);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"WEMoE\"", "\"WEMoE\\ud800\"", StringComparison.Ordinal));
        // Found by the checkpoint fuzz target; before the fix: InvalidOperationException "Cannot read invalid UTF-16 JSON text as string".
        var e = Assert.Throws<InvalidDataException>(() => state.Load(folder));
        Assert.That(e!.Message, Does.Contain(path).And.Contain("surrogate"));
    }

    [Test]
    public void TrainingCheckpointLoad_MomentOfDTypeTorchSharpLacks_ThrowsInvalidDataExceptionNamingFile()
    {
        var folder = _folder.File("checkpoint");
        using var state = TrainingCheckpointState.Trained(_states, 0);
        state.Save(folder);
        var path = Path.Combine(folder, TrainingCheckpoint.OptimizerFileName);
        var bytes = File.ReadAllBytes(path);
        var at = System.Text.Encoding.ASCII.GetString(bytes).IndexOf("\"F32\"", StringComparison.Ordinal);
        System.Text.Encoding.ASCII.GetBytes("\"U32\"").CopyTo(bytes, at);
        File.WriteAllBytes(path, bytes);
        // Before the fix: NotSupportedException from SafeTensorsFile.Load.
        var e = Assert.Throws<InvalidDataException>(() => state.Load(folder));
        Assert.That(e!.Message, Does.Contain(path).And.Contain("U32"));
    }

    /// <summary>Rewrites a safetensors file with the first element of the last tensor <paramref name="pick"/> accepts set to <paramref name="value"/>.</summary>
    private static string Poison(string path, Func<string, bool> pick, float value)
    {
        Dictionary<string, Tensor> tensors;
        Dictionary<string, string> metadata;
        using (var file = SafeTensorsFile.Open(path))
        {
            tensors = file.Names.ToDictionary(n => n, file.Load, StringComparer.Ordinal);
            metadata = file.Metadata.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
        }

        var victim = tensors.Keys.Where(pick).Order(StringComparer.Ordinal).Last();
        tensors[victim].view(-1)[0].fill_(value);
        File.Delete(path);
        SafeTensorsWriter.Save(path, tensors, metadata);
        foreach (var t in tensors.Values)
        {
            t.Dispose();
        }
        return victim;
    }

    [TestCase("\"\\ud800\\u0041\": false")]
    [TestCase("\"note\": \"\\udc00\"")]
    public void LoadPretrained_LoneSurrogateInConfig_ThrowsInvalidDataExceptionNamingFile(string member)
    {
        var folder = _folder.File("routers");
        using var model = _states.Upscaled(0);
        model.SavePretrained(folder);
        var config = Path.Combine(folder, UpscaledModelConfig.FileName);
        File.WriteAllText(config, File.ReadAllText(config).Replace("{", "{" + member + ",", StringComparison.Ordinal));
        // Before the fix: InvalidOperationException "Cannot read invalid UTF-16 JSON text as string", naming no file.
        var e = Assert.Throws<InvalidDataException>(() => model.LoadPretrained(folder));
        Assert.That(e!.Message, Does.Contain(config).And.Contain("surrogate"));
    }

    [Test]
    public void AdaMergingFromPretrained_LoneSurrogateInConfig_ThrowsInvalidDataExceptionNamingFile()
    {
        var folder = _folder.File("adamerging");
        using (var model = _states.AdaMerging(0))
        {
            model.SavePretrained(folder);
        }

        var config = Path.Combine(folder, AdaMergingModel.ConfigFileName);
        File.WriteAllText(config, File.ReadAllText(config).Replace("adamerging/1", "adamerging/1\\ud800", StringComparison.Ordinal));
        var e = Assert.Throws<InvalidDataException>(() => AdaMergingModel.FromPretrained(folder, _states.Pool()));
        Assert.That(e!.Message, Does.Contain(config));
    }

    [Test]
    public void LoadPretrained_ConsistentWeightsOfDTypeTorchSharpLacks_ThrowsInvalidDataExceptionNamingFile()
    {
        var folder = _folder.File("routers");
        using var model = _states.Upscaled(0);
        model.SavePretrained(folder);
        var configPath = Path.Combine(folder, UpscaledModelConfig.FileName);
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        var weightsPath = Path.Combine(folder, config["weights_file"]!.GetValue<string>());
        var bytes = File.ReadAllBytes(weightsPath);
        var at = System.Text.Encoding.ASCII.GetString(bytes).IndexOf("\"F32\"", StringComparison.Ordinal);
        System.Text.Encoding.ASCII.GetBytes("\"U32\"").CopyTo(bytes, at);
        File.Delete(weightsPath);
        var sha = Convert.ToHexStringLower(SHA256.HashData(bytes));
        config["weights_file"] = $"weights-{sha[..16]}.safetensors";
        config["weights_sha256"] = sha;
        File.WriteAllBytes(Path.Combine(folder, $"weights-{sha[..16]}.safetensors"), bytes);
        File.WriteAllText(configPath, config.ToJsonString());
        // Before the fix: NotSupportedException from SafeTensorsFile.Load.
        var e = Assert.Throws<InvalidDataException>(() => model.LoadPretrained(folder));
        Assert.That(e!.Message, Does.Contain(folder).And.Contain("U32"));
    }

    [Test]
    public void UpscaledModelFromPretrained_SavedLayerTheModelLacks_ThrowsInvalidDataExceptionNamingFolder()
    {
        var folder = _folder.File("routers");
        using (var model = _states.Upscaled(0))
        {
            model.SavePretrained(folder);
        }

        var configPath = Path.Combine(folder, UpscaledModelConfig.FileName);
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["layers"] = new JsonArray(0, 5);
        File.WriteAllText(configPath, config.ToJsonString());
        // Found by the long fuzz run: before the fix, ArgumentException "Layer 5 does not exist" (parameter 'Layers').
        var e = Assert.Throws<InvalidDataException>(() => UpscaledModel.FromPretrained(folder, _states.Pool()));
        Assert.That(e!.Message, Does.Contain(folder).And.Contain("Layer 5"));
    }

    [Test]
    public void AdaMergingFromPretrained_InitLambdaOverflowingToInfinity_ThrowsInvalidDataExceptionNamingFile()
    {
        var folder = _folder.File("adamerging");
        using (var model = _states.AdaMerging(0))
        {
            model.SavePretrained(folder);
        }

        var config = Path.Combine(folder, AdaMergingModel.ConfigFileName);
        var text = System.Text.RegularExpressions.Regex.Replace(File.ReadAllText(config), "\"init_lambda\": [^,]+,", "\"init_lambda\": 1e400,");
        Assert.That(text, Does.Contain("1e400"));
        File.WriteAllText(config, text);
        // Found by the long fuzz run: before the fix, ArgumentException "InitLambda must be finite; it is Infinity".
        var e = Assert.Throws<InvalidDataException>(() => AdaMergingModel.FromPretrained(folder, _states.Pool()));
        Assert.That(e!.Message, Does.Contain(config).And.Contain("InitLambda"));
    }
}
