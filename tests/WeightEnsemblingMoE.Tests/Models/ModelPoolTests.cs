using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Merging;
using WeightEnsembling.Models;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Models;

[TestFixture, NonParallelizable]
public sealed class ModelPoolTests
{
    private ClipVisionModel pretrained = null!;
    private ClipVisionModel[] experts = null!;
    private string root = null!;

    [SetUp]
    public void SetUp()
    {
        pretrained = TinyClip.Pretrained();
        experts = [TinyClip.Expert(pretrained, 11), TinyClip.Expert(pretrained, 12), TinyClip.Expert(pretrained, 13)];
        root = Path.Combine(Path.GetTempPath(), "wemoe-pool-" + Guid.NewGuid().ToString("N"));
        pretrained.SaveTo(Path.Combine(root, "base"));
        for (int t = 0; t < experts.Length; t++)
        {
            experts[t].SaveTo(Path.Combine(root, $"task{t}"));
        }
    }

    [TearDown]
    public void TearDown()
    {
        pretrained.Dispose();
        foreach (var expert in experts)
        {
            expert.Dispose();
        }

        Directory.Delete(root, recursive: true);
    }

    private ModelPool FolderPool() => ModelPool.FromFolders(Path.Combine(root, "base"), Enumerable.Range(0, 3).Select(t => Path.Combine(root, $"task{t}")));

    private ModelPool MemoryPool() => ModelPool.FromModels(pretrained, experts, ["task0", "task1", "task2"]);

    [Test]
    public void FromFolders_NamesExpertsByFolder()
    {
        var pool = FolderPool();
        Assert.That(pool.ExpertNames, Is.EqualTo(new[] { "task0", "task1", "task2" }));
        Assert.That(pool.ExpertCount, Is.EqualTo(3));
        Assert.That(pool.Keys, Is.EqualTo(pretrained.state_dict().Keys.ToArray()));
    }

    [Test]
    public void Fingerprint_SameWeightsInMemoryAndInFolders_Equal()
    {
        var fromFolders = FolderPool().Fingerprint();
        var fromModels = MemoryPool().Fingerprint();
        Assert.That(fromFolders.Pretrained, Is.EqualTo(fromModels.Pretrained));
        Assert.That(fromFolders.TaskVectors, Is.EqualTo(fromModels.TaskVectors));
        Assert.That(fromModels.TaskVectors.Distinct().Count(), Is.EqualTo(3));
    }

    [Test]
    public void TaskVectors_EqualExpertMinusPretrained()
    {
        var pool = MemoryPool();
        var theta0 = pool.LoadPretrained();
        int t = 0;
        foreach (var tau in pool.TaskVectors(theta0))
        {
            var expected = experts[t].state_dict();
            foreach (var (key, tensor) in tau)
            {
                using var difference = expected[key] - pretrained.state_dict()[key];
                Assert.That(TinyClip.BitEqual(tensor, difference), $"τ_{t}[{key}]");
            }

            t++;
        }

        Assert.That(t, Is.EqualTo(3));
        foreach (var tensor in theta0.Values)
        {
            tensor.Dispose();
        }
    }

    [Test]
    public void TaskArithmetic_FromFolders_EqualsStateDictMerging()
    {
        using var fromPool = ModelMerging.TaskArithmetic(FolderPool(), 0.3);
        var expected = StateDictMerging.TaskArithmetic(pretrained.state_dict(), experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.state_dict()).ToList(), 0.3);
        foreach (var (key, tensor) in fromPool.state_dict())
        {
            Assert.That(TinyClip.MaxDifference(tensor, expected[key].to(ScalarType.Float32)), Is.LessThan(1e-6), key);
        }
    }

    [Test]
    public void Ties_And_SimpleAverage_FromFolders_EqualInMemoryVersions()
    {
        using var tiesPool = ModelMerging.Ties(FolderPool());
        using var tiesModels = ModelMerging.Ties(pretrained, experts);
        using var averagePool = ModelMerging.SimpleAverage(FolderPool());
        using var averageModels = ModelMerging.SimpleAverage(experts);
        foreach (var (key, tensor) in tiesModels.state_dict())
        {
            Assert.That(TinyClip.MaxDifference(tiesPool.state_dict()[key], tensor), Is.LessThan(1e-6), key);
            Assert.That(TinyClip.MaxDifference(averagePool.state_dict()[key], averageModels.state_dict()[key]), Is.LessThan(1e-6), key);
        }
    }

    [Test]
    public void Upcycle_FromFolderPool_EqualsInMemoryUpcycle()
    {
        using var fromFolders = Upscaler.Upcycle(FolderPool());
        using var fromModels = Upscaler.Upcycle(pretrained, experts);
        using var images = TinyClip.Images(3, 2);
        using var a = fromFolders.Forward(images);
        using var b = fromModels.Forward(images);
        Assert.That(TinyClip.MaxDifference(a.LastHiddenState, b.LastHiddenState), Is.LessThan(1e-6));
    }

    [Test]
    public void AdaMerging_FromPool_EqualsFromModels()
    {
        using var fromPool = AdaMergingModel.Create(FolderPool());
        using var fromModels = AdaMergingModel.Create(pretrained, experts);
        using var images = TinyClip.Images(2, 9);
        using var a = fromPool.Features(images);
        using var b = fromModels.Features(images);
        Assert.That(TinyClip.MaxDifference(a, b), Is.LessThan(1e-6));
    }

    [Test]
    public void FromFolders_PyTorchBinExperts_SameWeightsAsSafetensors()
    {
        for (int t = 0; t < experts.Length; t++)
        {
            string bin = Path.Combine(root, $"bin{t}");
            Directory.CreateDirectory(bin);
            File.Copy(Path.Combine(root, $"task{t}", "config.json"), Path.Combine(bin, "config.json"));
            WeightEnsembling.Interop.TorchCheckpointWriter.Save(Path.Combine(bin, "pytorch_model.bin"), experts[t].state_dict());
        }

        var binPool = ModelPool.FromFolders(Path.Combine(root, "base"), Enumerable.Range(0, 3).Select(t => Path.Combine(root, $"bin{t}")), ["task0", "task1", "task2"]);
        Assert.That(binPool.Fingerprint(), Is.EqualTo(FolderPool().Fingerprint()).Using<ModelPoolFingerprint>((a, b) => a.Pretrained == b.Pretrained && a.TaskVectors.SequenceEqual(b.TaskVectors)));
        using var fromBin = ModelMerging.TaskArithmetic(binPool, 0.3);
        using var fromSafetensors = ModelMerging.TaskArithmetic(FolderPool(), 0.3);
        foreach (var (key, tensor) in fromSafetensors.state_dict())
        {
            Assert.That(TinyClip.BitEqual(fromBin.state_dict()[key], tensor), key);
        }
    }

    [Test]
    public void LoadExpertModel_EqualsExpert()
    {
        using var loaded = FolderPool().LoadExpertModel(1);
        foreach (var (key, tensor) in experts[1].state_dict())
        {
            Assert.That(TinyClip.BitEqual(loaded.state_dict()[key], tensor), key);
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => FolderPool().LoadExpertModel(3));
    }

    [Test]
    public void FromModels_ExpertWithOtherShape_ThrowsNamingExpertAndTensor()
    {
        using var wide = TinyClip.Pretrained(3, TinyClip.Config with { IntermediateSize = 24 });
        var e = Assert.Throws<ArgumentException>(() => ModelPool.FromModels(pretrained, [experts[0], wide], ["svhn", "mnist"]));
        Assert.That(e!.Message, Does.Contain("expert 'mnist'").And.Contain("mlp.fc1.weight"));
    }

    [Test]
    public void FromFolders_ExpertWithNaN_ThrowsNamingFolderAndTensorWhenRead()
    {
        using (no_grad())
        {
            experts[2].state_dict()["vision_model.post_layernorm.weight"][0] = float.NaN;
        }

        // SaveTo refuses NaN weights, so the corrupt expert is written as a bare safetensors file.
        WeightEnsembling.SafeTensors.SafeTensorsWriter.Save(Path.Combine(root, "task2", "model.safetensors"), experts[2].state_dict());
        var pool = FolderPool();
        var e = Assert.Throws<InvalidDataException>(() => pool.Fingerprint());
        Assert.That(e!.Message, Does.Contain("task2").And.Contain("vision_model.post_layernorm.weight").And.Contain("NaN"));
    }

    [Test]
    public void FromModels_RepeatedName_Throws()
    {
        var e = Assert.Throws<ArgumentException>(() => ModelPool.FromModels(pretrained, experts, ["a", "b", "a"]));
        Assert.That(e!.Message, Does.Contain("'a'"));
    }

    [Test]
    public void FromModels_WrongNameCount_Throws()
    {
        Assert.Throws<ArgumentException>(() => ModelPool.FromModels(pretrained, experts, ["a", "b"]));
    }

    [Test]
    public void FromFolders_MissingFolder_ThrowsNamingIt()
    {
        var e = Assert.Throws<DirectoryNotFoundException>(() => ModelPool.FromFolders(Path.Combine(root, "base"), [Path.Combine(root, "nope")]));
        Assert.That(e!.Message, Does.Contain("nope"));
    }
}
