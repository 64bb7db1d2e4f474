using WeightEnsembling.Clip;
using WeightEnsembling.Interop;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Interop;

[TestFixture, NonParallelizable]
public sealed class ClipPyTorchCheckpointTests
{
    private static string ClipFixture(string name) => Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Clip", name);

    [TestCase("clip_bin")]
    [TestCase("clip_bin_sharded")]
    public void FromPretrained_PyTorchBin_MatchesTheReferenceOutputs(string folder)
    {
        using var model = ClipVisionModel.FromPretrained(InteropFixtures.Path(folder));
        using var fromSafetensors = ClipVisionModel.FromPretrained(ClipFixture("quick_gelu"));
        var expectedWeights = fromSafetensors.state_dict();
        foreach (var (name, tensor) in model.state_dict())
        {
            Assert.That(tensor.Same(expectedWeights[name]), Is.True, name);
        }

        using var inputs = SafeTensorsFile.Open(Path.Combine(ClipFixture("quick_gelu"), "inputs.safetensors"));
        using var expected = SafeTensorsFile.Open(Path.Combine(ClipFixture("quick_gelu"), "expected.safetensors"));
        using var pixels = inputs.Load("pixel_values");
        using var noGrad = no_grad();
        var output = model.forward(pixels);
        using var embeds = expected.Load("image_embeds");
        using var pooled = expected.Load("pooled_output");
        Assert.That((output.ImageEmbeds! - embeds).abs().max().item<float>(), Is.LessThan(1e-5));
        Assert.That((output.PooledOutput - pooled).abs().max().item<float>(), Is.LessThan(1e-5));
    }

    [Test]
    public void FromPretrained_SafetensorsPresent_TakesPrecedenceOverBin()
    {
        using var folder = new TempFolder();
        foreach (var file in Directory.GetFiles(InteropFixtures.Path("clip_bin")))
        {
            File.Copy(file, Path.Combine(folder.Path, Path.GetFileName(file)));
        }

        // A corrupt bin next to valid safetensors: the safetensors are read, the bin is never opened.
        File.WriteAllBytes(Path.Combine(folder.Path, TorchCheckpointReader.PyTorchModelFileName), [1, 2, 3]);
        File.Copy(Path.Combine(ClipFixture("quick_gelu"), "model.safetensors"), Path.Combine(folder.Path, "model.safetensors"));
        using var model = ClipVisionModel.FromPretrained(folder.Path);
        Assert.That(model.HasProjection, Is.True);
    }

    [Test]
    public void FromPretrained_CorruptBin_ThrowsNamingTheFile()
    {
        using var folder = new TempFolder();
        File.Copy(Path.Combine(InteropFixtures.Path("clip_bin"), "config.json"), Path.Combine(folder.Path, "config.json"));
        var bytes = File.ReadAllBytes(Path.Combine(InteropFixtures.Path("clip_bin"), TorchCheckpointReader.PyTorchModelFileName));
        File.WriteAllBytes(Path.Combine(folder.Path, TorchCheckpointReader.PyTorchModelFileName), bytes[..(bytes.Length / 2)]);
        var error = Assert.Throws<TorchCheckpointFormatException>(() => ClipVisionModel.FromPretrained(folder.Path));
        Assert.That(error!.Message, Does.Contain(TorchCheckpointReader.PyTorchModelFileName));
    }

    [Test]
    public void FromPretrained_Bin_SaveTo_GivesAFolderTheUpscalerStreams()
    {
        using var folder = new TempFolder();
        using (var model = ClipVisionModel.FromPretrained(InteropFixtures.Path("clip_bin")))
        {
            model.SaveTo(folder.Path);
        }

        using var reference = ClipVisionModel.FromPretrained(ClipFixture("quick_gelu"));
        using var upscaled = WeightEnsembling.Upscaling.ModelUpscaler.ForFolder(folder.Path)
            .WithExpertFolders(folder.Path, ClipFixture("quick_gelu")).Build();
        Assert.That(upscaled.Modules, Has.Count.EqualTo(reference.Config.NumHiddenLayers));
    }
}
