using System.Text.Json.Nodes;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Upscaling;

/// <summary>Upscaled models with half-precision task vectors: the dtype in the saved configuration, round trips, refusals.</summary>
[TestFixture, NonParallelizable]
public sealed class HalfPrecisionPersistenceTests
{
    private ClipVisionModel pretrained = null!;
    private ClipVisionModel[] experts = null!;
    private string folder = null!;

    [SetUp]
    public void SetUp()
    {
        pretrained = TinyClip.Pretrained();
        experts = [TinyClip.Expert(pretrained, 11), TinyClip.Expert(pretrained, 12), TinyClip.Expert(pretrained, 13)];
        folder = Path.Combine(Path.GetTempPath(), "wemoe-half-" + Guid.NewGuid().ToString("N"));
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

    private ModelPool Pool() => ModelPool.FromModels(pretrained, experts, ["task0", "task1", "task2"]);

    private static List<TaskVectorStorage> Storages(UpscaledModelBase model) => model.Model.modules().OfType<TaskVectorStorage>().ToList();

    [TestCase(ScalarType.Float16, TaskVectorStorageKind.Dense, "float16")]
    [TestCase(ScalarType.BFloat16, TaskVectorStorageKind.Dense, "bfloat16")]
    [TestCase(ScalarType.Float16, TaskVectorStorageKind.Sparse, "float16")]
    [TestCase(ScalarType.BFloat16, TaskVectorStorageKind.LowRank, "bfloat16")]
    public void SavePretrained_HalfStorage_RecordsDType_AndFromPretrainedRebuildsItBitIdentical(ScalarType dtype, TaskVectorStorageKind kind, string name)
    {
        var storage = kind switch
        {
            TaskVectorStorageKind.Sparse => TaskVectorStorageOptions.Sparse(0.5),
            TaskVectorStorageKind.LowRank => TaskVectorStorageOptions.LowRank(2),
            _ => TaskVectorStorageOptions.Dense(),
        };
        using var model = ModelUpscaler.For(Pool()).WithRouterDepth(2).WithTaskVectorStorage(storage).WithTaskVectorDType(dtype).Build();
        Assert.That(storage.DType, Is.EqualTo(ScalarType.Float32), "the caller's options are not changed");
        Assert.That(Storages(model), Is.Not.Empty);
        Assert.That(Storages(model).SelectMany(s => s.buffers()).Where(b => b.is_floating_point()).All(b => b.dtype == dtype), Is.True);
        using (var noGrad = no_grad())
        {
            foreach (var parameter in model.TrainableParameters())
            {
                parameter.add_(randn(parameter.shape, generator: new Generator(3)) * 0.1);
            }
        }

        model.SavePretrained(folder);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, UpscaledModelConfig.FileName)))!;
        Assert.That(json["task_vector_dtype"]!.GetValue<string>(), Is.EqualTo(name));

        using var loaded = UpscaledModel.FromPretrained(folder, Pool());
        Assert.That(loaded.Options.TaskVectorStorage.DType, Is.EqualTo(dtype));
        Assert.That(Storages(loaded).Sum(s => s.Bytes), Is.EqualTo(Storages(model).Sum(s => s.Bytes)));
        Assert.That(Storages(loaded).SelectMany(s => s.buffers()).Where(b => b.is_floating_point()).All(b => b.dtype == dtype), Is.True);
        using var images = TinyClip.Images(3, 5);
        using var expected = model.Forward(images);
        using var actual = loaded.Forward(images);
        Assert.That(TinyClip.BitEqual(actual.LastHiddenState, expected.LastHiddenState), Is.True);

        using var again = ModelUpscaler.For(Pool()).WithRouterDepth(2).WithTaskVectorStorage(storage).WithTaskVectorDType(dtype).Build();
        again.LoadPretrained(folder);
        using var reloaded = again.Forward(images);
        Assert.That(TinyClip.BitEqual(reloaded.LastHiddenState, expected.LastHiddenState), Is.True);
    }

    [Test]
    public void LoadPretrained_SavedDTypeDiffers_RefusedNamingBoth()
    {
        using (var half = ModelUpscaler.For(Pool()).WithRouterDepth(1).WithTaskVectorDType(ScalarType.Float16).Build())
        {
            half.SavePretrained(folder);
        }

        using var full = ModelUpscaler.For(Pool()).WithRouterDepth(1).Build();
        var e = Assert.Throws<InvalidDataException>(() => full.LoadPretrained(folder));
        Assert.That(e!.Message, Does.Contain("task-vector dtype: saved float16, target float32"));

        using var bf16 = ModelUpscaler.For(Pool()).WithRouterDepth(1).WithTaskVectorDType(ScalarType.BFloat16).Build();
        e = Assert.Throws<InvalidDataException>(() => bf16.LoadPretrained(folder));
        Assert.That(e!.Message, Does.Contain("task-vector dtype: saved float16, target bfloat16"));
    }

    [Test]
    public void ConfigWithoutDType_ReadsAsFloat32_AndLoadsIntoFloat32Model()
    {
        using var model = ModelUpscaler.For(Pool()).WithRouterDepth(1).Build();
        model.SavePretrained(folder);
        string path = Path.Combine(folder, UpscaledModelConfig.FileName);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        Assert.That(json["task_vector_dtype"]!.GetValue<string>(), Is.EqualTo("float32"));
        json.Remove("task_vector_dtype");
        File.WriteAllText(path, json.ToJsonString());

        Assert.That(UpscaledModelConfig.FromFile(path).TaskVectorDType, Is.EqualTo(ScalarType.Float32));
        Assert.DoesNotThrow(() => model.LoadPretrained(folder));
        using var half = ModelUpscaler.For(Pool()).WithRouterDepth(1).WithTaskVectorDType(ScalarType.Float16).Build();
        Assert.Throws<InvalidDataException>(() => half.LoadPretrained(folder));
    }

    [TestCase("int32")]
    [TestCase("Float16")]
    [TestCase("fp16")]
    public void ConfigWithUnknownDType_RefusedNamingTheField(string value)
    {
        using var model = ModelUpscaler.For(Pool()).WithRouterDepth(1).Build();
        model.SavePretrained(folder);
        string path = Path.Combine(folder, UpscaledModelConfig.FileName);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        json["task_vector_dtype"] = value;
        File.WriteAllText(path, json.ToJsonString());

        var e = Assert.Throws<InvalidDataException>(() => UpscaledModelConfig.FromFile(path));
        Assert.That(e!.Message, Does.Contain("task_vector_dtype").And.Contain(value).And.Contain(path));
    }

    [TestCase(ScalarType.Int32)]
    [TestCase(ScalarType.Float64)]
    public void WithTaskVectorDType_NotAStorageDType_Throws(ScalarType dtype)
    {
        var e = Assert.Throws<ArgumentException>(() => ModelUpscaler.For(Pool()).WithTaskVectorDType(dtype));
        Assert.That(e!.Message, Does.Contain(dtype.ToString()));
    }
}
