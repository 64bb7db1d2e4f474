using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using WeightEnsembling.Clip;
using WeightEnsembling.DependencyInjection;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Tests.Logging;
using WeightEnsembling.Tests.Training;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;

namespace WeightEnsembling.Tests.DependencyInjection;

[TestFixture, NonParallelizable]
public sealed class ServiceCollectionTests
{
    [Test]
    public void AddWeightEnsemblingMoE_Defaults_ResolvesEveryService()
    {
        using var provider = new ServiceCollection().AddWeightEnsemblingMoE().BuildServiceProvider(validateScopes: true);
        Assert.That(provider.GetRequiredService<ITestTimeAdapter>(), Is.InstanceOf<AdaptationTrainer>());
        Assert.That(provider.GetRequiredService<IModelUpscalerFactory>(), Is.Not.Null);
        Assert.That(provider.GetRequiredService<IModelMerger>(), Is.Not.Null);
        Assert.That(provider.GetRequiredService<IModelEvaluator>(), Is.Not.Null);
        Assert.That(provider.GetRequiredService<IOptions<WeightEnsemblingMoEOptions>>().Value.RegMean.Alpha, Is.EqualTo(0.95));
    }

    [Test]
    public void AddWeightEnsemblingMoE_ServiceRegisteredBefore_KeepsTheApplicationsService()
    {
        var mine = new AdaptationTrainer();
        var services = new ServiceCollection().AddSingleton<ITestTimeAdapter>(mine).AddWeightEnsemblingMoE();
        using var provider = services.BuildServiceProvider();
        Assert.That(provider.GetRequiredService<ITestTimeAdapter>(), Is.SameAs(mine));
        Assert.That(services.Count(d => d.ServiceType == typeof(ITestTimeAdapter)), Is.EqualTo(1));
    }

    [Test]
    public void AddWeightEnsemblingMoE_CalledTwice_RegistersEachServiceOnce()
    {
        var services = new ServiceCollection().AddWeightEnsemblingMoE().AddWeightEnsemblingMoE();
        Assert.That(services.Count(d => d.ServiceType == typeof(IModelMerger)), Is.EqualTo(1));
        Assert.That(services.Count(d => d.ServiceType == typeof(IValidateOptions<WeightEnsemblingMoEOptions>)), Is.EqualTo(1));
    }

    [Test]
    public void Configure_FromInMemoryConfiguration_BindsEverySection()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["WeightEnsemblingMoE:Upscaler:RouterDepth"] = "1",
            ["WeightEnsemblingMoE:Upscaler:Layers:0"] = "0",
            ["WeightEnsemblingMoE:Upscaler:TaskVectorStorage:Kind"] = "Sparse",
            ["WeightEnsemblingMoE:Upscaler:TaskVectorStorage:SparsityRatio"] = "0.5",
            ["WeightEnsemblingMoE:TestTimeAdaptation:Steps"] = "7",
            ["WeightEnsemblingMoE:AdaMerging:Granularity"] = "TaskWise",
            ["WeightEnsemblingMoE:Ties:TopK"] = "0.1",
            ["WeightEnsemblingMoE:RegMean:Alpha"] = "0.5",
            ["WeightEnsemblingMoE:Fisher:Labels"] = "True",
            ["WeightEnsemblingMoE:TaskArithmeticScalingFactor"] = "0.7",
            ["WeightEnsemblingMoE:EvaluationBatchSize"] = "8",
        }).Build();
        using var provider = new ServiceCollection()
            .AddWeightEnsemblingMoE()
            .Configure<WeightEnsemblingMoEOptions>(configuration.GetSection(WeightEnsemblingMoEOptions.SectionName))
            .BuildServiceProvider();
        var options = provider.GetRequiredService<IOptions<WeightEnsemblingMoEOptions>>().Value;
        Assert.That(options.Upscaler.RouterDepth, Is.EqualTo(1));
        Assert.That(options.Upscaler.Layers, Is.EqualTo(new[] { 0 }));
        Assert.That(options.Upscaler.TaskVectorStorage.Kind, Is.EqualTo(TaskVectorStorageKind.Sparse));
        Assert.That(options.Upscaler.TaskVectorStorage.SparsityRatio, Is.EqualTo(0.5));
        Assert.That(options.TestTimeAdaptation.Steps, Is.EqualTo(7));
        Assert.That(options.AdaMerging.Granularity, Is.EqualTo(AdaMergingGranularity.TaskWise));
        Assert.That(options.Ties.TopK, Is.EqualTo(0.1));
        Assert.That(options.RegMean.Alpha, Is.EqualTo(0.5));
        Assert.That(options.Fisher.Labels, Is.EqualTo(FisherLabels.True));
        Assert.That(options.TaskArithmeticScalingFactor, Is.EqualTo(0.7));
        Assert.That(options.EvaluationBatchSize, Is.EqualTo(8));
    }

    [Test]
    public void Configure_OneMethodsOptionsOnTheirOwn_BindThroughIOptions()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["RegMean:ExampleCount"] = "12",
            ["RegMean:ThrowOnIllConditioned"] = "true",
            ["Tta:CosineSchedule"] = "true",
            ["Tta:CheckpointFolder"] = "checkpoint",
            ["Tta:Objective:AccumulateGradientsPerTask"] = "true",
        }).Build();
        using var provider = new ServiceCollection()
            .Configure<RegMeanOptions>(configuration.GetSection("RegMean"))
            .Configure<AdaptationOptions>(configuration.GetSection("Tta"))
            .BuildServiceProvider();
        var regMean = provider.GetRequiredService<IOptions<RegMeanOptions>>().Value;
        var tta = provider.GetRequiredService<IOptions<AdaptationOptions>>().Value;
        Assert.That((regMean.ExampleCount, regMean.ThrowOnIllConditioned, regMean.Alpha), Is.EqualTo((12, true, 0.95)));
        Assert.That((tta.CosineSchedule, tta.CheckpointFolder, tta.Steps), Is.EqualTo((true, "checkpoint", 1000)));
        Assert.That(((EntropyObjective)tta.Objective).AccumulateGradientsPerTask, Is.True);
    }

    [Test]
    public void Options_InvalidConfiguredValue_ThrowsNamingTheOption()
    {
        using var provider = new ServiceCollection()
            .AddWeightEnsemblingMoE(o => o.RegMean.Alpha = 2)
            .BuildServiceProvider();
        var error = Assert.Throws<OptionsValidationException>(() => _ = provider.GetRequiredService<IOptions<WeightEnsemblingMoEOptions>>().Value);
        Assert.That(error!.Message, Does.Contain("WeightEnsemblingMoE.RegMean.Alpha"));
    }

    [Test]
    public void Options_MissingSection_ThrowsNamingTheSection()
    {
        var options = new WeightEnsemblingMoEOptions { Fisher = null! };
        var error = Assert.Throws<ArgumentException>(options.Validate);
        Assert.That(error!.ParamName, Is.EqualTo("Fisher"));
    }

    [Test]
    public void Options_NonFiniteScalingFactor_ThrowsNamingTheOption()
    {
        var options = new WeightEnsemblingMoEOptions { TaskArithmeticScalingFactor = double.NaN };
        Assert.That(Assert.Throws<ArgumentException>(options.Validate)!.ParamName, Is.EqualTo(nameof(WeightEnsemblingMoEOptions.TaskArithmeticScalingFactor)));
    }

    [Test]
    public void UpscalerFactory_ConfiguredOptionsAndLogging_BuildsWithThemAndLogs()
    {
        using var fixture = new TrainingFixture();
        var logger = new CollectingLogger();
        using var provider = new ServiceCollection()
            .AddLogging(b => b.AddProvider(logger).SetMinimumLevel(LogLevel.Trace))
            .AddWeightEnsemblingMoE(o =>
            {
                o.Upscaler.RouterDepth = 1;
                o.Upscaler.Layers = [0];
            })
            .BuildServiceProvider();
        using var upscaled = provider.GetRequiredService<IModelUpscalerFactory>().For(fixture.Pretrained).WithExperts(fixture.Experts).Build();
        Assert.That(upscaled.Modules.Select(m => m.LayerIndex), Is.EqualTo(new[] { 0 }));
        Assert.That(upscaled.Options.RouterDepth, Is.EqualTo(1));
        Assert.That(logger.EventIds, Does.Contain(103));
    }

    [Test]
    public void Merger_TaskArithmetic_UsesTheConfiguredScalingFactor()
    {
        using var pretrained = TinyClip.Pretrained();
        using var expert = TinyClip.Expert(pretrained, 3);
        using var provider = new ServiceCollection().AddWeightEnsemblingMoE(o => o.TaskArithmeticScalingFactor = 0.7).BuildServiceProvider();
        using var merged = provider.GetRequiredService<IModelMerger>().TaskArithmetic(pretrained, [expert]);
        using var expected = ModelMerging.TaskArithmetic(pretrained, [expert], 0.7);
        using var byDefault = ModelMerging.TaskArithmetic(pretrained, [expert]);
        const string key = "vision_model.encoder.layers.0.mlp.fc1.weight";
        Assert.That(TinyClip.MaxDifference(merged.state_dict()[key], expected.state_dict()[key]), Is.EqualTo(0));
        Assert.That(TinyClip.MaxDifference(merged.state_dict()[key], byDefault.state_dict()[key]), Is.GreaterThan(1e-4));
    }

    [Test]
    public void TestTimeAdapter_CallWithoutOptions_UsesTheConfiguredOnes()
    {
        using var fixture = new TrainingFixture();
        using var upscaled = fixture.Upscale();
        using var provider = new ServiceCollection()
            .AddWeightEnsemblingMoE(o => o.TestTimeAdaptation = TrainingFixture.Options(3))
            .BuildServiceProvider();
        var result = provider.GetRequiredService<ITestTimeAdapter>().Adapt(upscaled, fixture.Tasks);
        Assert.That(result.StepsCompleted, Is.EqualTo(3));
    }

    [Test]
    public void Evaluator_ConfiguredBatchSize_GivesTheStaticEvaluatorsReport()
    {
        using var fixture = new TrainingFixture();
        using var provider = new ServiceCollection().AddWeightEnsemblingMoE(o => o.EvaluationBatchSize = 3).BuildServiceProvider();
        var report = provider.GetRequiredService<IModelEvaluator>().Evaluate("pretrained", fixture.Pretrained, fixture.Tasks);
        var expected = ModelEvaluator.Evaluate("pretrained", fixture.Pretrained, fixture.Tasks);
        Assert.That(report.Scores.Select(s => s.Accuracy), Is.EqualTo(expected.Scores.Select(s => s.Accuracy)));
    }

    [Test]
    public void Merger_FisherWithMismatchedTasks_ThrowsNamingTheArgument()
    {
        using var pretrained = TinyClip.Pretrained();
        using var provider = new ServiceCollection().AddWeightEnsemblingMoE().BuildServiceProvider();
        var merger = provider.GetRequiredService<IModelMerger>();
        var error = Assert.Throws<ArgumentException>(() => merger.Fisher([pretrained], []));
        Assert.That(error!.ParamName, Is.EqualTo("tasks"));
    }
}
