using TorchSharp;
using WeightEnsembling.Interop;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Interop;

[TestFixture, NonParallelizable]
public sealed class TorchCheckpointReaderTests
{
    private static string Fixture(string name) => InteropFixtures.Path(name);

    private static void DisposeAll(Dictionary<string, Tensor> tensors)
    {
        foreach (var tensor in tensors.Values)
        {
            tensor.Dispose();
        }
    }

    [Test]
    public void ReadStateDict_FabricCheckpoint_TakesTheModelDictionary()
    {
        var tensors = TorchCheckpointReader.ReadStateDict(Fixture("fusionbench_depth2.pt"));
        try
        {
            Assert.That(tensors.Keys, Has.Member("vision_model.encoder.layers.1.mlp.gate.fc2.bias"));
            Assert.That(tensors.Keys, Has.Member("vision_model.encoder.layers.0.mlp.task_vectors.2.fc1.weight"));
            Assert.That(tensors.Keys.Where(k => k.StartsWith("model.", StringComparison.Ordinal)), Is.Empty);
            Assert.That(tensors["vision_model.encoder.layers.0.mlp.base_model.fc1.weight"].shape, Is.EqualTo(new long[] { 32, 16 }));
            Assert.That(tensors.Values.All(t => t.dtype == ScalarType.Float32 && !t.requires_grad), Is.True);
        }
        finally
        {
            DisposeAll(tensors);
        }
    }

    [Test]
    public void ReadStateDict_WithKey_PicksThatEntry_AndAMissingKeyIsNamed()
    {
        var tensors = TorchCheckpointReader.ReadStateDict(Fixture("fusionbench_depth1.pt"), key: "model");
        Assert.That(tensors, Has.Count.GreaterThan(0));
        DisposeAll(tensors);

        var error = Assert.Throws<TorchCheckpointFormatException>(() => TorchCheckpointReader.ReadStateDict(Fixture("fusionbench_depth1.pt"), key: "state"));
        Assert.That(error!.Message, Does.Contain("'state'").And.Contain("'model'").And.Contain("fusionbench_depth1.pt"));
    }

    [Test]
    public void ReadPyTorchFolder_EqualsTheSafetensorsWeights_SingleAndSharded()
    {
        using var reference = SafeTensorsCheckpoint.Open(Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Clip", "quick_gelu"));
        foreach (var folder in new[] { "clip_bin", "clip_bin_sharded" })
        {
            var (tensors, _) = TorchCheckpointReader.ReadPyTorchFolder(Fixture(folder));
            try
            {
                Assert.That(tensors.Keys.Order(StringComparer.Ordinal), Is.EqualTo(reference.Names), folder);
                foreach (var name in reference.Names)
                {
                    using var expected = reference.Load(name);
                    Assert.That(tensors[name].Same(expected), Is.True, $"{folder}: {name}");
                }
            }
            finally
            {
                DisposeAll(tensors);
            }
        }
    }

    [Test]
    public void ReadStateDict_ViewsPyBridgeCannotRebuild_AreRefusedSayingHowToResave()
    {
        // views.pt holds a transposed tensor and a slice at a storage offset: PyBridge 1.4.4 rebuilds neither.
        var error = Assert.Throws<TorchCheckpointFormatException>(() => TorchCheckpointReader.ReadStateDict(Fixture("views.pt")));
        Assert.That(error!.Message, Does.Contain("views.pt").And.Contain("contiguous_format"));
    }

    [TestCase("forbidden_global.pt", "posix.system")]
    [TestCase("forbidden_stack_global.pt", "builtins.print")]
    public void ReadStateDict_ForbiddenGlobal_IsRefusedNamingGlobalAndFile(string file, string global)
    {
        var error = Assert.Throws<TorchCheckpointFormatException>(() => TorchCheckpointReader.ReadStateDict(Fixture(file)));
        Assert.That(error!.ForbiddenGlobal, Is.EqualTo(global));
        Assert.That(error.Message, Does.Contain(global).And.Contain(file));
    }

    [Test]
    public void ReadStateDict_LegacyFormat_IsRefusedSayingHowToResave()
    {
        var error = Assert.Throws<TorchCheckpointFormatException>(() => TorchCheckpointReader.ReadStateDict(Fixture("legacy_format.pt")));
        Assert.That(error!.Message, Does.Contain("legacy").And.Contain("legacy_format.pt"));
    }

    [TestCase(0.5)]
    [TestCase(0.98)]
    public void ReadStateDict_TruncatedArchive_ThrowsNamingTheFile(double keep)
    {
        using var folder = new TempFolder();
        var bytes = File.ReadAllBytes(Fixture("routers_depth2.pt"));
        var path = folder.File("truncated.pt");
        File.WriteAllBytes(path, bytes[..(int)(bytes.Length * keep)]);
        var error = Assert.Throws<TorchCheckpointFormatException>(() => TorchCheckpointReader.ReadStateDict(path));
        Assert.That(error!.Message, Does.Contain("truncated.pt"));
    }

    [Test]
    public void ReadStateDict_CorruptPickle_ThrowsNamingTheFile()
    {
        using var folder = new TempFolder();
        var path = folder.File("corrupt.pt");
        using (var tensor = torch.ones(2, 2))
        {
            TorchCheckpointWriter.Save(path, new Dictionary<string, Tensor> { ["w"] = tensor });
        }

        // Rewrite data.pkl with its last bytes (the STOP) cut off, keeping a valid zip.
        using (var archive = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Update))
        {
            var entry = archive.Entries.Single(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal));
            byte[] pickle;
            using (var stream = entry.Open())
            using (var copy = new MemoryStream())
            {
                stream.CopyTo(copy);
                pickle = copy.ToArray();
            }

            string name = entry.FullName;
            entry.Delete();
            using var replaced = archive.CreateEntry(name).Open();
            replaced.Write(pickle, 0, pickle.Length - 3);
        }

        var error = Assert.Throws<TorchCheckpointFormatException>(() => TorchCheckpointReader.ReadStateDict(path));
        Assert.That(error!.Message, Does.Contain("corrupt.pt").And.Contain("data.pkl"));
    }

    [Test]
    public void Save_ThenRead_RoundTripsDtypesShapesAndNesting()
    {
        using var folder = new TempFolder();
        var path = folder.File("round.pt");
        using var a = torch.randn(3, 4);
        using var b = torch.arange(5L);
        using var c = torch.randn(4, 3).t();
        TorchCheckpointWriter.Save(path, new Dictionary<string, Tensor> { ["x.a"] = a, ["x.b"] = b, ["c"] = c }, key: "model");
        var read = TorchCheckpointReader.ReadStateDict(path);
        try
        {
            Assert.That(read.Keys.Order(), Is.EqualTo(new[] { "c", "x.a", "x.b" }));
            Assert.That(read["x.a"].Same(a), Is.True);
            Assert.That(read["x.b"].dtype, Is.EqualTo(ScalarType.Int64));
            Assert.That(read["x.b"].Same(b), Is.True);
            Assert.That(read["c"].Same(c), Is.True);
        }
        finally
        {
            DisposeAll(read);
        }
    }

    [Test]
    public void ReadStateDict_ParametersSavedWithKeepVars_ReadAsTheirData_AndNonTensorsAreSkipped()
    {
        var tensors = TorchCheckpointReader.ReadStateDict(Fixture("keep_vars.pt"));
        using var expected = SafeTensorsFile.Open(Fixture("keep_vars_expected.safetensors"));
        try
        {
            Assert.That(tensors.Keys.Order(), Is.EqualTo(new[] { "bias", "weight" }));
            foreach (var (name, tensor) in tensors)
            {
                using var reference = expected.Load(name);
                Assert.That(tensor.Same(reference), Is.True, name);
            }
        }
        finally
        {
            DisposeAll(tensors);
        }
    }
}
