using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Tasks;

[TestFixture, NonParallelizable]
public sealed class TaskHeadTests
{
    private string _folder = "";

    [SetUp]
    public void CreateFolder()
    {
        _folder = Path.Combine(Path.GetTempPath(), "head-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_folder);
    }

    [TearDown]
    public void DeleteFolder() => Directory.Delete(_folder, recursive: true);

    private static ZeroShotClassificationHead FixtureHead(out Tensor features, out float[] expected)
    {
        var fixture = TaskFixtures.Load("zero_shot_head.json");
        features = TaskFixtures.Tensor(fixture, "features", "features_shape");
        expected = TaskFixtures.Floats(fixture, "logits");
        return new ZeroShotClassificationHead(TaskFixtures.Tensor(fixture, "text_embeds", "text_shape"), fixture.GetProperty("logit_scale").GetDouble());
    }

    [Test]
    public void ZeroShotForward_RandomEmbeddings_MatchesPyTorch()
    {
        using var scope = NewDisposeScope();
        using var head = FixtureHead(out var features, out var expected);
        Assert.That(head.call(features).data<float>().ToArray(), Is.EqualTo(expected).Within(1e-3f));
    }

    [Test]
    public void ZeroShotForward_HandComputed_IsScaledCosine()
    {
        using var scope = NewDisposeScope();
        // Text rows [3, 4] → [0.6, 0.8] and [0, 2] → [0, 1]; feature [1, 0] has cosines 0.6 and 0; scale exp(ln 10) = 10.
        using var head = new ZeroShotClassificationHead(tensor(new float[] { 3, 4, 0, 2 }, 2, 2), Math.Log(10));
        var logits = head.call(tensor(new float[] { 5, 0 }, 1, 2));
        Assert.That(logits.data<float>().ToArray(), Is.EqualTo(new[] { 6f, 0f }).Within(1e-5f));
        Assert.That(head.Scale, Is.EqualTo(10).Within(1e-5));
    }

    [Test]
    public void ZeroShotConstructor_NormalisesTextEmbeddingsToUnitLength()
    {
        using var scope = NewDisposeScope();
        using var head = new ZeroShotClassificationHead(tensor(new float[] { 3, 4, 0, 2, 1, 1 }, 3, 2), 0);
        Assert.That(head.TextEmbeddings.norm(1).data<float>().ToArray(), Is.All.EqualTo(1f).Within(1e-6f));
    }

    [Test]
    public void ZeroShotConstructor_ZeroRow_ThrowsNamingTextEmbeddings()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => new ZeroShotClassificationHead(tensor(new float[] { 1, 0, 0, 0 }, 2, 2), 0));
        Assert.That(ex!.ParamName, Is.EqualTo("textEmbeddings"));
    }

    [Test]
    public void LinearForward_HandComputed_IsAffine()
    {
        using var scope = NewDisposeScope();
        // W = [[1, 2], [0, -1], [3, 0]], b = [0.5, 0, -1]; x = [2, 1] → [1·2 + 2·1 + 0.5, −1, 3·2 − 1] = [4.5, −1, 5].
        using var head = new LinearClassificationHead(tensor(new float[] { 1, 2, 0, -1, 3, 0 }, 3, 2), tensor(new[] { 0.5f, 0f, -1f }));
        Assert.That(head.call(tensor(new float[] { 2, 1 }, 1, 2)).data<float>().ToArray(), Is.EqualTo(new[] { 4.5f, -1f, 5f }));
        Assert.That((head.ClassCount, head.InputDimension), Is.EqualTo((3, 2)));
    }

    [Test]
    public void StateDict_Keys_FollowPyTorchNames()
    {
        using var linear = new LinearClassificationHead(4, 3);
        using var zeroShot = new ZeroShotClassificationHead(ones(3, 4), 1);
        Assert.That(linear.state_dict().Keys, Is.EquivalentTo(new[] { "weight", "bias" }));
        Assert.That(zeroShot.state_dict().Keys, Is.EquivalentTo(new[] { "text_embeds", "logit_scale" }));
    }

    [Test]
    public void NewHead_IsFrozen_AndCanBeUnfrozen()
    {
        using var head = new LinearClassificationHead(4, 3);
        Assert.That(head.IsFrozen, Is.True);
        Assert.That(head.parameters().Count(), Is.EqualTo(2));
        head.SetFrozen(false);
        Assert.That(head.parameters().All(p => p.requires_grad), Is.True);
    }

    [Test]
    public void Constructor_InsideDisposeScope_ParametersOutliveTheScope()
    {
        LinearClassificationHead head;
        using (var scope = NewDisposeScope())
        {
            head = new LinearClassificationHead(ones(2, 3), zeros(2));
        }
        using (head)
        using (var scope = NewDisposeScope())
        {
            Assert.That(head.call(ones(1, 3)).data<float>().ToArray(), Is.EqualTo(new[] { 3f, 3f }));
        }
    }

    [Test]
    public void Forward_FeatureWidthMismatch_ThrowsNamingFeaturesAndWidth()
    {
        using var scope = NewDisposeScope();
        using var head = new LinearClassificationHead(4, 3);
        var ex = Assert.Throws<ArgumentException>(() => head.call(zeros(2, 5)));
        Assert.That(ex!.ParamName, Is.EqualTo("features"));
        Assert.That(ex.Message, Does.Contain("[B, 4]").And.Contain("[2, 5]"));
    }

    [Test]
    public void Constructor_ClassNameCountMismatch_Throws()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => new ZeroShotClassificationHead(ones(3, 2), 0, ["a", "b"]));
        Assert.That(ex!.Message, Does.Contain("3 classes but 2 class names"));
    }

    [Test]
    public void SaveLoad_ZeroShot_RoundTripsKindNamesAndLogits()
    {
        using var scope = NewDisposeScope();
        var fixture = TaskFixtures.Load("zero_shot_head.json");
        string[] names = ["zero", "one", "two \"quoted\"", "three", "four"];
        using var head = new ZeroShotClassificationHead(TaskFixtures.Tensor(fixture, "text_embeds", "text_shape"), fixture.GetProperty("logit_scale").GetDouble(), names);
        string path = Path.Combine(_folder, "zs.safetensors");
        head.Save(path);

        using var loaded = TaskHead.Load(path);
        var features = TaskFixtures.Tensor(fixture, "features", "features_shape");
        Assert.That(loaded, Is.InstanceOf<ZeroShotClassificationHead>());
        Assert.That(loaded.ClassNames, Is.EqualTo(names));
        Assert.That(loaded.IsFrozen, Is.True);
        // Loading normalises the stored (already unit-length) rows again: equal up to float rounding.
        Assert.That(loaded.call(features).data<float>().ToArray(), Is.EqualTo(head.call(features).data<float>().ToArray()).Within(1e-4f));
    }

    [Test]
    public void Save_ZeroShot_StoresLogOfScaleAndKindMetadata()
    {
        using var scope = NewDisposeScope();
        using var head = new ZeroShotClassificationHead(ones(2, 3), Math.Log(100));
        string path = Path.Combine(_folder, "zs.safetensors");
        head.Save(path);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Metadata[TaskHead.HeadKindKey], Is.EqualTo("zero_shot"));
        Assert.That(file.Load("logit_scale").item<float>(), Is.EqualTo(4.60517f).Within(1e-5f));
        Assert.That(file.Load("text_embeds").shape, Is.EqualTo(new long[] { 2, 3 }));
    }

    [Test]
    public void SaveLoad_Linear_RoundTripsWeights()
    {
        using var scope = NewDisposeScope();
        using var head = new LinearClassificationHead(5, 4);
        string path = Path.Combine(_folder, "linear.safetensors");
        head.Save(path);
        using var loaded = (LinearClassificationHead)TaskHead.Load(path);
        Assert.That(loaded.ClassNames, Is.Null);
        Assert.That(loaded.Weight.data<float>().ToArray(), Is.EqualTo(head.Weight.data<float>().ToArray()));
        Assert.That(loaded.Bias.data<float>().ToArray(), Is.EqualTo(head.Bias.data<float>().ToArray()));
    }

    [Test]
    public void Load_FileWithoutHeadKind_ThrowsNamingFile()
    {
        using var scope = NewDisposeScope();
        string path = Path.Combine(_folder, "plain.safetensors");
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["weight"] = ones(2, 2) });
        var ex = Assert.Throws<InvalidDataException>(() => TaskHead.Load(path));
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("head_kind"));
    }

    [Test]
    public void Load_UnknownKind_ThrowsNamingKind()
    {
        using var scope = NewDisposeScope();
        string path = Path.Combine(_folder, "odd.safetensors");
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["weight"] = ones(2, 2) }, new Dictionary<string, string> { ["head_kind"] = "mlp" });
        var ex = Assert.Throws<InvalidDataException>(() => TaskHead.Load(path));
        Assert.That(ex!.Message, Does.Contain("'mlp'"));
    }

    [Test]
    public void Load_LinearWithoutBias_ThrowsNamingTensor()
    {
        using var scope = NewDisposeScope();
        string path = Path.Combine(_folder, "nobias.safetensors");
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["weight"] = ones(2, 2) }, new Dictionary<string, string> { ["head_kind"] = "linear" });
        var ex = Assert.Throws<InvalidDataException>(() => TaskHead.Load(path));
        Assert.That(ex!.Message, Does.Contain("'bias'").And.Contain(path));
    }
}
