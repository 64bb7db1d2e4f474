using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Training;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Training;

/// <summary>Issue 17's item 6: the opt-in safeguards beyond the papers (anchor, diversity, early stopping).</summary>
[TestFixture, NonParallelizable]
public sealed class SafeguardTests
{
    private TrainingFixture fixture = null!;
    private TempFolder folder = null!;

    [SetUp]
    public void SetUp()
    {
        fixture = new TrainingFixture();
        folder = new TempFolder();
    }

    [TearDown]
    public void TearDown()
    {
        fixture.Dispose();
        folder.Dispose();
    }

    [Test]
    public void AnchorStrength_KeepsTheRoutersNearTheirStart()
    {
        double Displacement(double strength)
        {
            using var upscaled = fixture.Upscale();
            var start = TrainingFixture.Snapshot(upscaled);
            var options = TrainingFixture.Options(20);
            options.AnchorStrength = strength;
            new AdaptationTrainer().Adapt(upscaled, fixture.Tasks, options);
            return upscaled.NamedTrainableParameters().Sum(p => (p.Value - start[p.Key]).square().sum().item<float>());
        }

        double free = Displacement(0);
        double anchored = Displacement(1000);
        Assert.That(free, Is.GreaterThan(0));
        Assert.That(anchored, Is.LessThan(0.25 * free), $"anchored {anchored}, free {free}");
    }

    [Test]
    public void AnchorStrength_ResumedRun_EndsBitIdenticalToTheUninterruptedRun()
    {
        AdaptationOptions Options(int steps)
        {
            var options = TrainingFixture.Options(steps);
            options.AnchorStrength = 50;
            return options;
        }

        Dictionary<string, Tensor> uninterrupted;
        using (var model = fixture.Upscale())
        {
            new AdaptationTrainer().Adapt(model, fixture.Tasks, Options(6));
            uninterrupted = TrainingFixture.Snapshot(model);
        }

        string checkpoint = folder.File("anchored");
        using (var first = fixture.Upscale())
        {
            var options = Options(3);
            options.CheckpointFolder = checkpoint;
            new AdaptationTrainer().Adapt(first, fixture.Tasks, options);
        }

        using (var optimizer = SafeTensorsFile.Open(Path.Combine(checkpoint, "optimizer.safetensors")))
        {
            Assert.That(optimizer.Names.Count(n => n.StartsWith("anchor.", StringComparison.Ordinal)), Is.EqualTo(8));
        }

        // The resumed model starts from the checkpoint's parameters; only the saved θ₀ makes it pull towards the first run's start.
        using var resumed = fixture.Upscale();
        var resume = Options(6);
        resume.ResumeFrom = checkpoint;
        new AdaptationTrainer().Adapt(resumed, fixture.Tasks, resume);
        Assert.That(TrainingFixture.BitEqual(uninterrupted, TrainingFixture.Snapshot(resumed)), Is.True);
    }

    [Test]
    public void Resume_AnchorSettingDiffersFromTheCheckpoints_ThrowsNamingAnchorStrength()
    {
        string plain = folder.File("plain");
        string anchored = folder.File("anchored");
        foreach (var (path, strength) in new[] { (plain, 0.0), (anchored, 10.0) })
        {
            using var model = fixture.Upscale();
            var options = TrainingFixture.Options(2);
            options.CheckpointFolder = path;
            options.AnchorStrength = strength;
            new AdaptationTrainer().Adapt(model, fixture.Tasks, options);
        }

        using var fresh = fixture.Upscale();
        var anchoring = TrainingFixture.Options(4);
        anchoring.AnchorStrength = 10;
        anchoring.ResumeFrom = plain;
        Assert.That(() => new AdaptationTrainer().Adapt(fresh, fixture.Tasks, anchoring),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("AnchorStrength"));
        var free = TrainingFixture.Options(4);
        free.ResumeFrom = anchored;
        Assert.That(() => new AdaptationTrainer().Adapt(fresh, fixture.Tasks, free),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("AnchorStrength"));
    }

    [Test]
    public void DiversityWeight_LossIsMeanEntropyMinusWeightTimesEntropyOfTheMeanPrediction()
    {
        const double weight = 0.7;
        var options = TrainingFixture.Options(1);
        options.Objective = new EntropyObjective { DiversityWeight = weight };

        // The first step's loss is computed before any update: recompute it from the same batches with an identical model.
        var expected = new Dictionary<string, double>();
        using (var reference = fixture.Upscale())
        using (no_grad())
        {
            reference.SetTraining(true);
            for (int i = 0; i < fixture.Tasks.Count; i++)
            {
                var task = fixture.Tasks[i];
                using var batch = task.Data.Endless(options.BatchSize, options.Seed + i).First();
                var p = task.Logits(batch.Images, reference.Features).to_type(ScalarType.Float64).softmax(-1);
                double meanEntropy = (-(p * (p + 1e-8).log()).sum(-1)).mean().item<double>();
                var mean = p.mean([0]);
                double diversity = -(mean * (mean + 1e-8).log()).sum().item<double>();
                expected[task.Name] = meanEntropy - (weight * diversity);
            }
        }

        using var model = fixture.Upscale();
        var result = new AdaptationTrainer().Adapt(model, fixture.Tasks, options);
        foreach (var (name, value) in expected)
        {
            Assert.That(result.FinalLosses[name], Is.EqualTo(value).Within(1e-5), name);
        }

        Assert.That(options.Objective.Name, Is.EqualTo("entropy-diversity"));
    }

    [Test]
    public void DiversityLoss_MatchesPyTorchsValueAndGradient()
    {
        // tools/fixtures/diversity_loss_reference.py: PyTorch autograd in float64 on float32 logits.
        string path = Path.Combine(AppContext.BaseDirectory, "Fixtures", "Training", "diversity_loss.json");
        using var document = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
        int index = 0;
        foreach (var item in document.RootElement.GetProperty("cases").EnumerateArray())
        {
            var rows = item.GetProperty("logits").EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetSingle()).ToArray()).ToArray();
            var expectedGradient = item.GetProperty("gradient").EnumerateArray().SelectMany(r => r.EnumerateArray().Select(v => v.GetDouble())).ToArray();
            using var logits = tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]).to_type(ScalarType.Float64).requires_grad_(true);

            using var loss = EntropyObjective.Loss(logits, item.GetProperty("weight").GetDouble());
            loss.backward();

            Assert.That(loss.item<double>(), Is.EqualTo(item.GetProperty("loss").GetDouble()).Within(1e-10), $"case {index}");
            Assert.That(logits.grad!.data<double>().ToArray(), Is.EqualTo(expectedGradient).Within(1e-10), $"case {index}");
            index++;
        }

        Assert.That(index, Is.EqualTo(4));
    }

    [Test]
    public void EarlyStopping_KeepsTheBestChecksParametersAndStopsWhenPatienceRunsOut()
    {
        using var model = fixture.Upscale();
        var options = TrainingFixture.Options(40);
        options.LearningRate = 0.5; // large enough that the held-out entropy stops falling within the run
        options.EarlyStopping = new EarlyStopping { HeldOut = fixture.Tasks, Interval = 2, Patience = 2 };
        var result = new AdaptationTrainer().Adapt(model, fixture.Tasks, options);

        var checks = result.HeldOutEntropy;
        Assert.That(checks[0].Key, Is.EqualTo(0));
        Assert.That(checks.Select(c => c.Key), Is.Ordered.Ascending);
        var best = checks.MinBy(c => c.Value);
        Assert.That(result.RestoredStep, Is.EqualTo(best.Key));
        if (result.StepsCompleted < options.Steps)
        {
            Assert.That(result.StepsCompleted, Is.EqualTo(best.Key + (options.EarlyStopping.Patience * options.EarlyStopping.Interval)));
        }

        // The model now holds the best check's parameters: its held-out entropy, measured here, is the best recorded.
        double measured = 0;
        using (no_grad())
        {
            foreach (var task in fixture.Tasks)
            {
                using var batch = task.Data.Batches(64).Single();
                measured += EntropyLoss.Compute(task.Logits(batch.Images, model.Features)).item<float>();
            }
        }

        Assert.That(measured / fixture.Tasks.Count, Is.EqualTo(best.Value).Within(1e-6));
        Assert.That(result.StepsCompleted, Is.LessThan(options.Steps), "a learning rate of 0.5 should make the held-out entropy stop improving");
    }

    [Test]
    public void EarlyStopping_HeldOutTasksInAnotherOrder_ThrowsNamingBoth()
    {
        using var model = fixture.Upscale();
        var options = TrainingFixture.Options(2);
        options.EarlyStopping = new EarlyStopping { HeldOut = fixture.Tasks.Reverse().ToList() };
        Assert.That(() => new AdaptationTrainer().Adapt(model, fixture.Tasks, options),
            Throws.ArgumentException.With.Message.Contains("[t1, t0]").And.Message.Contains("[t0, t1]"));
    }

    [Test]
    public void Validate_BadSafeguardSettings_ThrowNamingTheSetting()
    {
        var negative = TrainingFixture.Options();
        negative.AnchorStrength = -1;
        Assert.That(negative.Validate, Throws.TypeOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("AnchorStrength"));

        var diversity = TrainingFixture.Options();
        diversity.Objective = new EntropyObjective { DiversityWeight = double.NaN };
        Assert.That(diversity.Validate, Throws.TypeOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("DiversityWeight"));

        var empty = TrainingFixture.Options();
        empty.EarlyStopping = new EarlyStopping();
        Assert.That(empty.Validate, Throws.ArgumentException.With.Property("ParamName").EqualTo("HeldOut"));

        var patience = TrainingFixture.Options();
        patience.EarlyStopping = new EarlyStopping { HeldOut = fixture.Tasks, Patience = 0 };
        Assert.That(patience.Validate, Throws.TypeOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("Patience"));

        var checkpointed = TrainingFixture.Options();
        checkpointed.EarlyStopping = new EarlyStopping { HeldOut = fixture.Tasks };
        checkpointed.CheckpointFolder = folder.File("never");
        Assert.That(checkpointed.Validate, Throws.ArgumentException.With.Property("ParamName").EqualTo("EarlyStopping"));
        Assert.That(Directory.Exists(folder.File("never")), Is.False);
    }
}
