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
/// weights file, NaN in an adaptation checkpoint.
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
