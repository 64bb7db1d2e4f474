using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Pareto;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Merging;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Upscaling;

[TestFixture, NonParallelizable]
public sealed class SavePretrainedTests
{
    private ClipVisionModel pretrained = null!;
    private ClipVisionModel[] experts = null!;
    private string folder = null!;

    [SetUp]
    public void SetUp()
    {
        pretrained = TinyClip.Pretrained();
        experts = [TinyClip.Expert(pretrained, 11), TinyClip.Expert(pretrained, 12), TinyClip.Expert(pretrained, 13)];
        folder = Path.Combine(Path.GetTempPath(), "wemoe-save-" + Guid.NewGuid().ToString("N"));
    }

    [TearDown]
    public void TearDown()
    {
        pretrained.Dispose();
        foreach (var expert in experts)
        {
            expert.Dispose();
        }

        if (Directory.Exists(folder))
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private ModelPool Pool(params int[] order) =>
        ModelPool.FromModels(pretrained, order.Select(i => experts[i]), order.Select(i => $"task{i}"));

    private static IEnumerable<TestCaseData> Variants()
    {
        yield return new TestCaseData(new ModelUpscalerOptions { RouterDepth = 2 }).SetName("SavePretrained_RoundTrip_WEMoE_BitIdentical");
        yield return new TestCaseData(new ModelUpscalerOptions { RouterDepth = 0 }).SetName("SavePretrained_RoundTrip_WEMoE0_BitIdentical");
        yield return new TestCaseData(new ModelUpscalerOptions { RouterDepth = 1, SharedRouter = true, PositionEncoding = true, TaskVectorStorage = TaskVectorStorageOptions.Sparse(0.5) })
            .SetName("SavePretrained_RoundTrip_EWEMoE_BitIdentical");
        yield return new TestCaseData(new ModelUpscalerOptions { RouterDepth = 2, TaskVectorStorage = TaskVectorStorageOptions.LowRank(2) }).SetName("SavePretrained_RoundTrip_LowRank_BitIdentical");
    }

    [TestCaseSource(nameof(Variants))]
    public void RoundTrip(ModelUpscalerOptions options)
    {
        var pool = Pool(0, 1, 2);
        using var model = ModelUpscaler.For(pool).WithOptions(options).Build();
        Perturb(model.TrainableParameters());
        model.SavePretrained(folder);

        Assert.That(File.Exists(Path.Combine(folder, UpscaledModelConfig.FileName)));
        Assert.That(Directory.GetFiles(folder, "weights-*.safetensors"), Has.Length.EqualTo(1));
        using var loaded = UpscaledModel.FromPretrained(folder, Pool(0, 1, 2));
        Assert.That(loaded.ExpertNames, Is.EqualTo(new[] { "task0", "task1", "task2" }));
        using var images = TinyClip.Images(4, 3);
        using var expected = model.Forward(images);
        using var actual = loaded.Forward(images);
        Assert.That(TinyClip.BitEqual(actual.LastHiddenState, expected.LastHiddenState), Is.True, "outputs differ after the round trip");
    }

    [Test]
    public void SavePretrained_Pareto_RoundTripBitIdentical()
    {
        using var model = ModelUpscaler.For(Pool(0, 1, 2)).WithRouterDepth(2).BuildPareto();
        Perturb(model.TrainableParameters());
        model.SavePretrained(folder);
        using var loaded = ParetoUpscaledModel.FromPretrained(folder, Pool(0, 1, 2));
        double[] preference = [0.2, 0.5, 0.3];
        model.SetPreference(preference);
        loaded.SetPreference(preference);
        using var images = TinyClip.Images(2, 4);
        using var expected = model.Forward(images);
        using var actual = loaded.Forward(images);
        Assert.That(TinyClip.BitEqual(actual.LastHiddenState, expected.LastHiddenState), Is.True);
    }

    [Test]
    public void FromPretrained_ReorderedExperts_RefusedNamingOrder()
    {
        SaveWemoe(Pool(0, 1, 2));
        var e = Assert.Throws<InvalidDataException>(() => UpscaledModel.FromPretrained(folder, Pool(1, 0, 2)).Dispose());
        Assert.That(e!.Message, Does.Contain("reordered").And.Contain("[task0, task1, task2]").And.Contain("[task1, task0, task2]"));
    }

    [Test]
    public void FromPretrained_MissingExpert_RefusedNamingIt()
    {
        SaveWemoe(Pool(0, 1, 2));
        var e = Assert.Throws<InvalidDataException>(() => UpscaledModel.FromPretrained(folder, Pool(0, 1)).Dispose());
        Assert.That(e!.Message, Does.Contain("expert 'task2' is missing"));
    }

    [Test]
    public void FromPretrained_ExtraExpert_RefusedNamingIt()
    {
        SaveWemoe(Pool(0, 1));
        var e = Assert.Throws<InvalidDataException>(() => UpscaledModel.FromPretrained(folder, Pool(0, 1, 2)).Dispose());
        Assert.That(e!.Message, Does.Contain("target has expert 'task2'"));
    }

    [Test]
    public void FromPretrained_ExpertWithOtherWeights_RefusedNamingIt()
    {
        SaveWemoe(Pool(0, 1, 2));
        using var other = TinyClip.Expert(pretrained, 99);
        var pool = ModelPool.FromModels(pretrained, [experts[0], other, experts[2]], ["task0", "task1", "task2"]);
        var e = Assert.Throws<InvalidDataException>(() => UpscaledModel.FromPretrained(folder, pool).Dispose());
        Assert.That(e!.Message, Does.Contain("expert 'task1' has other weights"));
        Assert.That(e.Message, Does.Not.Contain("task0' has other"));
    }

    [Test]
    public void FromPretrained_OtherPretrained_RefusedNamingTheta0()
    {
        SaveWemoe(Pool(0, 1, 2));
        using var otherBase = TinyClip.Pretrained(seed: 5);
        var pool = ModelPool.FromModels(otherBase, experts, ["task0", "task1", "task2"]);
        var e = Assert.Throws<InvalidDataException>(() => UpscaledModel.FromPretrained(folder, pool).Dispose());
        Assert.That(e!.Message, Does.Contain("pre-trained model θ_0 differs"));
    }

    [Test]
    public void LoadPretrained_OtherDepth_RefusedNamingDepth()
    {
        SaveWemoe(Pool(0, 1, 2));
        using var model = ModelUpscaler.For(Pool(0, 1, 2)).WithRouterDepth(1).Build();
        var e = Assert.Throws<InvalidDataException>(() => model.LoadPretrained(folder));
        Assert.That(e!.Message, Does.Contain("router depth: saved 2, target 1"));
    }

    [Test]
    public void LoadPretrained_PerLayerIntoShared_RefusedNamingSharing()
    {
        SaveWemoe(Pool(0, 1, 2));
        using var model = ModelUpscaler.For(Pool(0, 1, 2)).WithSharedRouter().Build();
        var before = model.RouterStateDict();
        var e = Assert.Throws<InvalidDataException>(() => model.LoadPretrained(folder));
        Assert.That(e!.Message, Does.Contain("method: saved WEMoE, target E-WEMoE").And.Contain("shared router: saved False, target True"));
        var after = model.RouterStateDict();
        Assert.That(after.All(p => TinyClip.BitEqual(p.Value, before[p.Key])), "the model changed although loading failed");
    }

    [Test]
    public void LoadPretrained_OtherStorage_RefusedNamingStorage()
    {
        SaveWemoe(Pool(0, 1, 2));
        using var model = ModelUpscaler.For(Pool(0, 1, 2)).WithTaskVectorStorage(TaskVectorStorageOptions.Sparse(0.5)).Build();
        var e = Assert.Throws<InvalidDataException>(() => model.LoadPretrained(folder));
        Assert.That(e!.Message, Does.Contain("task-vector storage: saved Dense, target Sparse"));
    }

    [Test]
    public void LoadPretrained_WeightsFromAnotherSave_RefusedAsMixture()
    {
        SaveWemoe(Pool(0, 1, 2));
        string weights = Directory.GetFiles(folder, "weights-*.safetensors").Single();
        var config = UpscaledModelConfig.FromFile(Path.Combine(folder, UpscaledModelConfig.FileName));
        string otherFolder = folder + "-other";
        try
        {
            using (var other = ModelUpscaler.For(Pool(0, 1, 2)).Build())
            {
                Perturb(other.TrainableParameters(), seed: 77);
                other.SavePretrained(otherFolder);
            }

            File.Copy(Directory.GetFiles(otherFolder, "weights-*.safetensors").Single(), weights, overwrite: true);
            using var model = ModelUpscaler.For(Pool(0, 1, 2)).Build();
            var e = Assert.Throws<InvalidDataException>(() => model.LoadPretrained(folder));
            Assert.That(e!.Message, Does.Contain("mixes two saves"));
        }
        finally
        {
            Directory.Delete(otherFolder, recursive: true);
        }
    }

    [Test]
    public void SavePretrained_NaNRouter_RefusedAndPreviousSaveKept()
    {
        using var model = ModelUpscaler.For(Pool(0, 1, 2)).Build();
        model.SavePretrained(folder);
        string configBefore = File.ReadAllText(Path.Combine(folder, UpscaledModelConfig.FileName));
        using (no_grad())
        {
            model.TrainableParameters()[0].fill_(double.NaN);
        }

        var e = Assert.Throws<InvalidDataException>(() => model.SavePretrained(folder));
        Assert.That(e!.Message, Does.Contain("NaN"));
        Assert.That(File.ReadAllText(Path.Combine(folder, UpscaledModelConfig.FileName)), Is.EqualTo(configBefore));
        Assert.That(Directory.GetFiles(folder), Has.Length.EqualTo(2));
    }

    [Test]
    public void LoadRouterStateDict_NaNRouter_RefusedNamingTensor()
    {
        using var model = ModelUpscaler.For(Pool(0, 1, 2)).Build();
        var routers = model.RouterStateDict();
        routers["vision_model.encoder.layers.1.mlp.gate.fc2.bias"].fill_(double.PositiveInfinity);
        var e = Assert.Throws<ArgumentException>(() => model.LoadRouterStateDict(routers));
        Assert.That(e!.Message, Does.Contain("vision_model.encoder.layers.1.mlp.gate.fc2.bias"));
    }

    [Test]
    public void LoadRouterStateDict_PerLayerRoutersIntoSharedRouter_Refused()
    {
        using var perLayer = ModelUpscaler.For(Pool(0, 1, 2)).WithRouterDepth(1).Build();
        Perturb(perLayer.TrainableParameters());
        using var shared = ModelUpscaler.For(Pool(0, 1, 2)).WithRouterDepth(1).WithSharedRouter().Build();
        var e = Assert.Throws<ArgumentException>(() => shared.LoadRouterStateDict(perLayer.RouterStateDict()));
        Assert.That(e!.Message, Does.Contain("shared router"));
    }

    [Test]
    public void SavePretrained_SecondSave_ReplacesWeightsAndLeavesNoLeftovers()
    {
        using var model = ModelUpscaler.For(Pool(0, 1, 2)).Build();
        model.SavePretrained(folder);
        File.WriteAllText(Path.Combine(folder, ".weights-pending-leftover.safetensors"), "partial");
        Perturb(model.TrainableParameters());
        model.SavePretrained(folder);
        var files = Directory.GetFiles(folder).Select(Path.GetFileName).OrderBy(f => f).ToArray();
        Assert.That(files, Has.Length.EqualTo(2));
        Assert.That(files[0], Is.EqualTo(UpscaledModelConfig.FileName));
        Assert.That(files[1], Does.StartWith("weights-"));
    }

    [Test]
    public void UpscaledModelConfig_DuplicateField_RefusedNamingFile()
    {
        SaveWemoe(Pool(0, 1, 2));
        string path = Path.Combine(folder, UpscaledModelConfig.FileName);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"router_depth\": 2,", "\"router_depth\": 2, \"router_depth\": 1,"));
        var e = Assert.Throws<InvalidDataException>(() => UpscaledModelConfig.FromFile(path));
        Assert.That(e!.Message, Does.Contain(path));
    }

    [TestCase(AdaMergingGranularity.LayerWise)]
    [TestCase(AdaMergingGranularity.TaskWise)]
    public void SavePretrained_AdaMerging_RoundTripBitIdentical(AdaMergingGranularity granularity)
    {
        using var model = AdaMergingModel.Create(Pool(0, 1, 2), new AdaMergingOptions { Granularity = granularity });
        Perturb([model.MergeWeight]);
        model.SavePretrained(folder);
        using var loaded = AdaMergingModel.FromPretrained(folder, Pool(0, 1, 2));
        Assert.That(loaded.Options.Granularity, Is.EqualTo(granularity));
        using var images = TinyClip.Images(2, 8);
        using var expected = model.Features(images);
        using var actual = loaded.Features(images);
        Assert.That(TinyClip.BitEqual(actual, expected));
    }

    [Test]
    public void FromPretrained_AdaMergingReorderedOrOtherGranularity_Refused()
    {
        using (var model = AdaMergingModel.Create(Pool(0, 1, 2)))
        {
            model.SavePretrained(folder);
        }

        var e = Assert.Throws<InvalidDataException>(() => AdaMergingModel.FromPretrained(folder, Pool(2, 1, 0)).Dispose());
        Assert.That(e!.Message, Does.Contain("reordered"));
        using var taskWise = AdaMergingModel.Create(Pool(0, 1, 2), new AdaMergingOptions { Granularity = AdaMergingGranularity.TaskWise });
        e = Assert.Throws<InvalidDataException>(() => taskWise.LoadPretrained(folder));
        Assert.That(e!.Message, Does.Contain("method: saved AdaMerging (layer-wise), target AdaMerging (task-wise)"));
    }

    private void SaveWemoe(ModelPool pool)
    {
        using var model = ModelUpscaler.For(pool).Build();
        Perturb(model.TrainableParameters());
        model.SavePretrained(folder);
    }

    private static void Perturb(IEnumerable<TorchSharp.Modules.Parameter> parameters, int seed = 3)
    {
        using var generator = new Generator((ulong)seed);
        using var noGrad = no_grad();
        foreach (var parameter in parameters)
        {
            using var noise = randn(parameter.shape, generator: generator) * 0.1;
            parameter.add_(noise);
        }
    }
}
