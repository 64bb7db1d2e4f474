using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Clip;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.Tasks;
using WeightEnsembling.Pareto;
using WeightEnsembling.Tests.Clip;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Tests.Training;
using WeightEnsembling.Text;
using WeightEnsembling.Training;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Devices;

/// <summary>
/// The CPU guard of issue 16 item 6 ("one device for everything"). No CUDA build is on our feed, so two checks stand in:
/// <list type="number">
/// <item>Each path runs on CPU models with libtorch's default device set to <c>meta</c>: a tensor the path makes
/// without naming a device lands on meta and the first op mixing it with the model's tensors throws ("Expected all
/// tensors to be on the same device"), as a CPU tensor would on a CUDA model. Heads are wrapped in
/// <see cref="DeviceCheckingHead"/>, which checks the features and the head's parameters; the results must equal a
/// run with the default device left alone. (Modules a path constructs, such as the merged model of <c>Run</c>, are made
/// on the default device by TorchSharp and moved afterwards; that step cannot run under a meta default and is not
/// covered.)</item>
/// <item>Paths that take a model on <c>meta</c> must get as far as meta kernels allow: the evaluator runs every batch
/// through a meta model and head and fails only when it reads the count back ("no data"); the vision tower fails at its
/// patch convolution, which has no meta kernel (so batches did reach the model's device). A forgotten move would fail
/// earlier with a device-mismatch error instead.</item>
/// </list>
/// The training loop (<see cref="AdaptationTrainer"/>) is covered both ways: entropy (with a checkpoint saved and resumed)
/// and Pareto (linear scalarization and EPO, whose gradient Gram matrix is built on the parameters' device) under a meta
/// default, and a meta model that the first step reaches with its heads and batches moved to meta.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class DeviceGuardTests
{
    private static readonly Device Meta = new(DeviceType.META);

    private static T WithMetaDefault<T>(Func<T> path)
    {
        var before = get_default_device();
        set_default_device(Meta);
        try
        {
            return path();
        }
        finally
        {
            set_default_device(before);
        }
    }

    private static List<ClassificationTask> Checked(IReadOnlyList<ClassificationTask> tasks, Device device) =>
        tasks.Select(t => t with { Head = new DeviceCheckingHead(t.Head, device) }).ToList();

    private static void AssertSameScores(EvaluationReport expected, EvaluationReport actual)
    {
        Assert.That(actual.Scores.Select(s => s.Accuracy), Is.EqualTo(expected.Scores.Select(s => s.Accuracy)));
        Assert.That(actual.Scores.Select(s => s.Loss), Is.EqualTo(expected.Scores.Select(s => s.Loss)).Within(1e-9));
    }

    [Test]
    public void Evaluator_PlainUpscaledAndAdaMerging_MakeNothingOnTheDefaultDevice()
    {
        using var fixture = new TrainingFixture();
        var tasks = Checked(fixture.Tasks, CPU);
        using var upscaled = fixture.Upscale();
        using var adamerging = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts);

        var plain = ModelEvaluator.Evaluate("plain", fixture.Pretrained, tasks, batchSize: 8);
        var moe = ModelEvaluator.Evaluate("moe", upscaled, tasks, batchSize: 8);
        var ada = ModelEvaluator.Evaluate(null, adamerging, tasks, batchSize: 8);
        int calls = tasks.Sum(t => ((DeviceCheckingHead)t.Head).Calls);

        var plainMeta = WithMetaDefault(() => ModelEvaluator.Evaluate("plain", fixture.Pretrained, tasks, batchSize: 8));
        var moeMeta = WithMetaDefault(() => ModelEvaluator.Evaluate("moe", upscaled, tasks, batchSize: 8));
        var adaMeta = WithMetaDefault(() => ModelEvaluator.Evaluate(null, adamerging, tasks, batchSize: 8));

        AssertSameScores(plain, plainMeta);
        AssertSameScores(moe, moeMeta);
        AssertSameScores(ada, adaMeta);
        Assert.That(tasks.Sum(t => ((DeviceCheckingHead)t.Head).Calls), Is.EqualTo(2 * calls), "every batch went through the checking heads");
    }

    [Test]
    public void AdaMerging_FeaturesAndMergedWeights_MakeNothingOnTheDefaultDevice()
    {
        using var fixture = new TrainingFixture();
        using var images = Upscaling.TinyClip.Images(4, 3);
        using var model = AdaMergingModel.Create(fixture.Pretrained, fixture.Experts);
        using var expectedFeatures = model.Features(images);
        var expectedWeights = model.MergedWeights();

        var (features, weights) = WithMetaDefault(() =>
        {
            model.To(CPU);
            return (model.Features(images), model.MergedWeights());
        });

        using (features)
        {
            Assert.That(model.Device.type, Is.EqualTo(DeviceType.CPU));
            Assert.That(features.device.type, Is.EqualTo(DeviceType.CPU));
            Assert.That(features.equal(expectedFeatures).all().item<bool>(), Is.True);
            AssertSameTensors(expectedWeights, weights);
        }
    }

    [TestCase(FisherLabels.True)]
    [TestCase(FisherLabels.Sampled)]
    public void Fisher_StatisticsAndMerge_MakeNothingOnTheDefaultDevice(FisherLabels labels)
    {
        using var fixture = new TrainingFixture();
        var heads = fixture.Tasks.Select(t => (TaskHead)new DeviceCheckingHead(t.Head, CPU)).ToList();
        var options = new FisherMergingOptions { Labels = labels, ExampleCount = 12, BatchSize = 5, Shuffle = true };
        var models = fixture.Experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.state_dict()).ToList();
        Dictionary<string, Tensor> Run()
        {
            var fishers = fixture.Experts.Select((e, t) => (IReadOnlyDictionary<string, Tensor>)FisherMerging.ComputeFisher(e, heads[t], fixture.Tasks[t].Data, options)).ToList();
            return FisherMerging.Merge(models, fishers, options);
        }

        var expected = Run();
        var actual = WithMetaDefault(Run);

        AssertSameTensors(expected, actual);
        Assert.That(heads.All(h => ((DeviceCheckingHead)h).Calls > 0), Is.True);
    }

    [TestCase(12, 0.95)]
    [TestCase(1, 1.0)] // 5 token rows per task for 16-wide layers and no diagonal shrink: singular Grams, the ridge fallback
    public void RegMean_StatisticsAndMerge_MakeNothingOnTheDefaultDevice(int examples, double alpha)
    {
        using var fixture = new TrainingFixture();
        var options = new RegMeanOptions { ExampleCount = examples, BatchSize = 5, Alpha = alpha };
        var models = fixture.Experts.Select(e => (IReadOnlyDictionary<string, Tensor>)e.state_dict()).ToList();
        Dictionary<string, Tensor> Run()
        {
            var grams = fixture.Experts.Select((e, t) => (IReadOnlyDictionary<string, Tensor>)RegMean.ComputeGramMatrices(e, fixture.Tasks[t].Data, options)).ToList();
            return RegMean.Merge(models, grams, options);
        }

        var expected = Run();
        var actual = WithMetaDefault(Run);

        AssertSameTensors(expected, actual);
    }

    [Test]
    public void ZeroShotHead_FromClassNames_MakesNothingOnTheDefaultDevice()
    {
        using var clip = ClipModel.FromPretrained(ClipModelTests.Fixture("clip_zeroshot"));
        var tokenizer = ClipTokenizer.FromPretrained(Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Text", "clip_tokenizer", "slow"));
        string[] classes = ["cat", "dog", "red car"];
        string[] templates = ["a photo of a {}.", "a drawing of a {}."];

        using var expected = ZeroShotClassificationHead.FromClassNames(clip, tokenizer, classes, templates, batchSize: 4);
        using var actual = WithMetaDefault(() => ZeroShotClassificationHead.FromClassNames(clip, tokenizer, classes, templates, batchSize: 4));

        Assert.That(actual.TextEmbeddings.device.type, Is.EqualTo(DeviceType.CPU));
        Assert.That(actual.LogitScale.device.type, Is.EqualTo(DeviceType.CPU));
        Assert.That(actual.TextEmbeddings.equal(expected.TextEmbeddings).all().item<bool>(), Is.True);
    }

    [Test]
    public void Evaluator_MetaModel_RunsEveryBatchOnTheModelsDeviceUntilTheCountIsRead()
    {
        using var fixture = new TrainingFixture();
        using var model = new MetaLinearModel(3 * 8 * 8, Upscaling.TinyClip.Config.ProjectionDim);
        var tasks = Checked(fixture.Tasks, Meta);

        var e = Assert.Throws<System.Runtime.InteropServices.ExternalException>(() => ModelEvaluator.Evaluate("meta", model, tasks, batchSize: 8));

        Assert.That(e!.Message, Does.Contain("no data"), "only reading the count back may fail on meta");
        Assert.That(((DeviceCheckingHead)tasks[0].Head).Calls, Is.EqualTo(3), "20 examples in batches of 8 reached the head on meta");
        Assert.That(model.Batches, Is.EqualTo(3));
    }

    [Test]
    public void FisherAndRegMean_MetaModel_BatchesReachTheModelOnItsDevice()
    {
        using var fixture = new TrainingFixture();
        var data = fixture.Tasks.Select(t => t.Data).ToList();
        foreach (var expert in fixture.Experts)
        {
            expert.to(Meta);
        }

        var heads = fixture.Tasks.Select(t => t.Head).ToList();
        var fisher = Assert.Throws<System.Runtime.InteropServices.ExternalException>(
            () => FisherMerging.Run(fixture.Experts, heads, data, new FisherMergingOptions { ExampleCount = 4, BatchSize = 4 }));
        var regmean = Assert.Throws<System.Runtime.InteropServices.ExternalException>(
            () => RegMean.Run(fixture.Experts, data, new RegMeanOptions { ExampleCount = 4, BatchSize = 4 }));

        // conv2d has no meta kernel in libtorch 2.10: this error means the images reached the patch embedding on meta.
        // A batch left on the CPU fails earlier: "Input type (CPUFloatType) and weight type (MetaFloatType) should be the same".
        Assert.That(fisher!.Message, Does.Contain("convolution_overrideable"));
        Assert.That(regmean!.Message, Does.Contain("convolution_overrideable"));
        Assert.That(heads[0].parameters().All(p => p.device.type == DeviceType.META), Is.True, "Fisher moved task 0's head to the model's device");
    }

    [Test]
    public void Trainer_EntropyObjectiveWithCheckpointAndResume_MakesNothingOnTheDefaultDevice()
    {
        using var fixture = new TrainingFixture();
        using var folder = new TempFolder();
        var tasks = Checked(fixture.Tasks, CPU);
        using var model = fixture.Upscale();
        var initial = TrainingFixture.Snapshot(model);

        // Two steps with a checkpoint, then a run resumed from it for a third: the loop, the objective, the checkpoint's
        // save and its load (weights, Adam moments, trainer state) all run.
        Dictionary<string, Tensor> Run(string checkpoint)
        {
            Restore(model, initial);
            var options = TrainingFixture.Options(2);
            options.CheckpointFolder = checkpoint;
            new AdaptationTrainer().Adapt(model, tasks, options);
            options = TrainingFixture.Options(3);
            options.CheckpointFolder = checkpoint;
            options.ResumeFrom = checkpoint;
            var result = new AdaptationTrainer().Adapt(model, tasks, options);
            Assert.That(result.StartStep, Is.EqualTo(2));
            return TrainingFixture.Snapshot(model);
        }

        var expected = Run(folder.File("cpu-default"));
        int calls = tasks.Sum(t => ((DeviceCheckingHead)t.Head).Calls);
        var actual = WithMetaDefault(() => Run(folder.File("meta-default")));

        Assert.That(calls, Is.GreaterThan(0));
        Assert.That(tasks.Sum(t => ((DeviceCheckingHead)t.Head).Calls), Is.EqualTo(2 * calls), "every batch went through the checking heads");
        Assert.That(TrainingFixture.BitEqual(expected, actual), Is.True, "the same routers as with the default device left alone");
        Assert.That(actual.Values.All(t => t.device.type == DeviceType.CPU), Is.True);
    }

    [TestCase(ParetoScalarization.LinearScalarization)]
    [TestCase(ParetoScalarization.ExactParetoOptimal)]
    public void Trainer_ParetoObjective_MakesNothingOnTheDefaultDevice(ParetoScalarization scalarization)
    {
        using var synthetic = new Pareto.SyntheticTasks(examples: 16);
        var tasks = Checked(synthetic.Tasks, CPU);
        using var model = synthetic.BuildPareto();
        var initial = TrainingFixture.Snapshot(model);
        var options = new AdaptationOptions { Objective = new ParetoObjective { Scalarization = scalarization }, Steps = 3, BatchSize = 8, LearningRate = 1e-2 };
        Dictionary<string, Tensor> Run()
        {
            Restore(model, initial);
            new AdaptationTrainer().Adapt(model, tasks, options);
            return TrainingFixture.Snapshot(model);
        }

        var expected = Run();
        int calls = tasks.Sum(t => ((DeviceCheckingHead)t.Head).Calls);
        var actual = WithMetaDefault(Run);

        Assert.That(tasks.Sum(t => ((DeviceCheckingHead)t.Head).Calls), Is.EqualTo(2 * calls), "every batch went through the checking heads");
        Assert.That(TrainingFixture.BitEqual(expected, actual), Is.True, "the same routers as with the default device left alone");
    }

    [Test]
    public void Trainer_MetaModel_MovesHeadsAndBatchesToTheModelsDeviceBeforeTheLossIsRead()
    {
        using var fixture = new TrainingFixture();
        using var model = new MetaLinearModel(3 * 8 * 8, Upscaling.TinyClip.Config.ProjectionDim);
        var tasks = Checked(fixture.Tasks, Meta);

        var e = Assert.Throws<System.Runtime.InteropServices.ExternalException>(
            () => new AdaptationTrainer().Adapt(model, tasks, TrainingFixture.Options(2)));

        // The first task's batch went through the model and head on meta; only reading its entropy back fails there.
        Assert.That(e!.Message, Does.Contain("no data"), "only reading the loss back may fail on meta");
        Assert.That(model.Batches, Is.EqualTo(1));
        Assert.That(((DeviceCheckingHead)tasks[0].Head).Calls, Is.EqualTo(1));
        Assert.That(tasks.All(t => t.Head.parameters().All(p => p.device.type == DeviceType.META)), Is.True, "every head was moved to the model's device");
    }

    private static void Restore(IAdaptableModel model, IReadOnlyDictionary<string, Tensor> values)
    {
        using var noGrad = no_grad();
        foreach (var (name, parameter) in model.NamedTrainableParameters())
        {
            parameter.copy_(values[name]);
        }
    }

    private static void AssertSameTensors(IReadOnlyDictionary<string, Tensor> expected, IReadOnlyDictionary<string, Tensor> actual)
    {
        Assert.That(actual.Keys.Order(), Is.EqualTo(expected.Keys.Order()));
        foreach (var (name, tensor) in expected)
        {
            Assert.That(actual[name].device.type, Is.EqualTo(DeviceType.CPU), name);
            Assert.That((actual[name] - tensor).abs().max().item<float>(), Is.LessThanOrEqualTo(1e-6f), name);
        }
    }

    /// <summary>A linear image model whose weight lives on meta; it refuses pixels on any other device.</summary>
    private sealed class MetaLinearModel : IAdaptableModel, IDisposable
    {
        private readonly Parameter weight;

        public MetaLinearModel(int inputs, int outputs)
        {
            weight = new Parameter(zeros(inputs, outputs, device: Meta));
        }

        public int Batches { get; private set; }

        public string Method => "meta-linear";

        public IReadOnlyList<KeyValuePair<string, Parameter>> NamedTrainableParameters() => [KeyValuePair.Create("weight", weight)];

        public void SetTraining(bool training)
        {
        }

        public void SavePretrained(string folder) => throw new NotSupportedException("A meta model holds no values to save.");

        public void LoadPretrained(string folder) => throw new NotSupportedException("A meta model holds no values to load.");

        public Tensor Features(Tensor pixelValues)
        {
            if (pixelValues.device.type != DeviceType.META)
            {
                throw new InvalidOperationException($"Device guard: pixels on {pixelValues.device}, the model on meta.");
            }

            Batches++;
            return pixelValues.flatten(1).matmul(weight);
        }

        public void Dispose() => weight.Dispose();
    }
}
