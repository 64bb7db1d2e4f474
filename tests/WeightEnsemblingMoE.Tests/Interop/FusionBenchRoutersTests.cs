using TorchSharp;
using WeightEnsembling.Interop;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Tests.Upscaling;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Interop;

/// <summary>
/// Routers trained in FusionBench (fixtures by tools/fixtures/fusionbench_routers_fixture.py, a PyTorch re-implementation
/// of FusionBench's WEMoE module names) load into our upscaled model and route as PyTorch did; ours export back.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class FusionBenchRoutersTests
{
    private const int Tasks = 3;

    private static UpscaledModel Target(int depth, int tasks = Tasks)
    {
        using var pretrained = TinyClip.Pretrained();
        var experts = Enumerable.Range(0, tasks).Select(t => TinyClip.Expert(pretrained, 30 + t)).ToList();
        try
        {
            return ModelUpscaler.For(pretrained).WithExperts(experts).WithRouterDepth(depth).WithInitLambda(0.3).WithSeed(7).Build();
        }
        finally
        {
            foreach (var expert in experts)
            {
                expert.Dispose();
            }
        }
    }

    /// <summary>The routing weights [B, T] our WEMoE modules compute on the fixture's hidden states x{l}.</summary>
    private static void AssertRoutes(UpscaledModel model, string routingFile, double tolerance = 1e-5)
    {
        using var file = SafeTensorsFile.Open(routingFile);
        using var noGrad = no_grad();
        foreach (var module in model.Modules)
        {
            using var x = file.Load($"x{module.LayerIndex}");
            using var expected = file.Load($"r{module.LayerIndex}");
            using var output = module.Module.forward(x);
            var actual = module.Module.LastRoutingWeights!;
            Assert.That(actual.shape, Is.EqualTo(expected.shape), module.Path);
            Assert.That((actual - expected).abs().max().item<float>(), Is.LessThan(tolerance), module.Path);
        }
    }

    private static Dictionary<string, Tensor> ImportInto(UpscaledModel model, string file)
    {
        var expected = model.RouterStateDict();
        try
        {
            var routers = FusionBenchRouters.Import(InteropFixtures.Path(file), expected);
            model.LoadRouterStateDict(routers);
            return routers;
        }
        finally
        {
            expected.Values.DisposeAll();
        }
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(2)]
    public void Import_FabricCheckpoint_RoutesAsFusionBench(int depth)
    {
        using var model = Target(depth);
        var routers = ImportInto(model, $"fusionbench_depth{depth}.pt");
        Assert.That(routers.Keys, Is.EquivalentTo(model.RouterStateDict().Keys));
        routers.Values.DisposeAll();
        AssertRoutes(model, InteropFixtures.Path($"routing_depth{depth}.safetensors"));
    }

    [TestCase("routers_depth2.pt")]
    [TestCase("routers_depth2_wrapped.pt")]
    public void Import_RoutersOnlyFile_EqualsTheFullCheckpointsRouters(string file)
    {
        using var model = Target(2);
        var full = ImportInto(model, "fusionbench_depth2.pt");
        var only = ImportInto(model, file);
        try
        {
            Assert.That(only.Keys, Is.EquivalentTo(full.Keys));
            foreach (var (key, tensor) in full)
            {
                Assert.That(only[key].Same(tensor), Is.True, key);
            }

            AssertRoutes(model, InteropFixtures.Path("routing_depth2.safetensors"));
        }
        finally
        {
            full.Values.DisposeAll();
            only.Values.DisposeAll();
        }
    }

    [Test]
    public void Import_MoreTasksThanTheTarget_IsRefusedNamingTheKey()
    {
        using var model = Target(2);
        var error = Assert.Throws<InvalidDataException>(() => ImportInto(model, "fusionbench_depth2_4tasks.pt"));
        Assert.That(error!.Message, Does.Contain("gate.fc2.weight").And.Contain("4 tasks").And.Contain("3 task vectors")
            .And.Contain("fusionbench_depth2_4tasks.pt"));
    }

    [Test]
    public void Import_MoreLayersThanTheTarget_IsRefusedNamingTheModule()
    {
        using var model = Target(1);
        var error = Assert.Throws<InvalidDataException>(() => ImportInto(model, "fusionbench_depth1_3layers.pt"));
        Assert.That(error!.Message, Does.Contain("vision_model.encoder.layers.2.mlp.gate.*").And.Contain("3 module(s)"));
    }

    [Test]
    public void Import_OtherRouterDepth_IsRefusedNamingBothKeys()
    {
        using var model = Target(2);
        var error = Assert.Throws<InvalidDataException>(() => ImportInto(model, "fusionbench_depth1.pt"));
        Assert.That(error!.Message, Does.Contain("depth 1").And.Contain("depth 2").And.Contain("gate.fc.weight").And.Contain("gate.fc1.weight"));
    }

    [Test]
    public void Import_InconsistentTaskVectorCount_IsRefused()
    {
        using var model = Target(2);
        var expected = model.RouterStateDict();
        var state = TorchCheckpointReader.ReadStateDict(InteropFixtures.Path("fusionbench_depth2.pt"));
        try
        {
            foreach (var key in state.Keys.Where(k => k.Contains("layers.0.mlp.task_vectors.2.", StringComparison.Ordinal)).ToList())
            {
                state[key].Dispose();
                state.Remove(key);
            }

            var error = Assert.Throws<InvalidDataException>(() => FusionBenchRouters.Import(state, expected));
            Assert.That(error!.Message, Does.Contain("layers.0.mlp.task_vectors.").And.Contain("2 task vectors"));
        }
        finally
        {
            state.Values.DisposeAll();
            expected.Values.DisposeAll();
        }
    }

    [TestCase("routers.pt", true)]
    [TestCase("routers_plain.pt", false)]
    [TestCase("routers.safetensors", true)]
    public void Save_ThenImport_RoundTripsAndRoutesTheSame(string name, bool fabricLayout)
    {
        using var folder = new TempFolder();
        using var source = Target(2);
        using (no_grad())
        {
            foreach (var parameter in source.TrainableParameters())
            {
                parameter.add_(randn_like(parameter));
            }
        }

        var routers = source.RouterStateDict();
        string path = folder.File(name);
        FusionBenchRouters.Save(path, routers, fabricLayout);
        using var target = Target(2);
        var expected = target.RouterStateDict();
        var imported = FusionBenchRouters.Import(path, expected);
        try
        {
            foreach (var (key, tensor) in routers)
            {
                Assert.That(imported[key].Same(tensor), Is.True, key);
            }
        }
        finally
        {
            routers.Values.DisposeAll();
            expected.Values.DisposeAll();
            imported.Values.DisposeAll();
        }
    }

    [Test]
    public void Export_NonFiniteRouter_IsRefusedNamingTheKey()
    {
        using var model = Target(1);
        var routers = model.RouterStateDict();
        try
        {
            routers["vision_model.encoder.layers.1.mlp.gate.fc.bias"][0] = float.NaN;
            var error = Assert.Throws<ArgumentException>(() => FusionBenchRouters.Export(routers));
            Assert.That(error!.Message, Does.Contain("vision_model.encoder.layers.1.mlp.gate.fc.bias"));
        }
        finally
        {
            routers.Values.DisposeAll();
        }
    }

    /// <summary>
    /// The committed .NET export (Fixtures/Interop/dotnet_export, checked by PyTorch with
    /// <c>fusionbench_routers_fixture.py --check-dotnet</c>) reads back and routes as .NET recorded. With
    /// WEMOE_WRITE_INTEROP_FIXTURES=1 the test first rewrites those files in the source tree.
    /// </summary>
    [TestCase(0)]
    [TestCase(1)]
    [TestCase(2)]
    public void DotnetExport_CommittedFiles_ReadBackAndRouteAsRecorded(int depth)
    {
        if (Environment.GetEnvironmentVariable("WEMOE_WRITE_INTEROP_FIXTURES") == "1")
        {
            WriteDotnetExport(depth);
        }

        foreach (var file in new[] { $"routers_depth{depth}.pt", $"routers_depth{depth}.safetensors" })
        {
            using var model = Target(depth);
            var routers = ImportInto(model, Path.Combine("dotnet_export", file));
            routers.Values.DisposeAll();
            AssertRoutes(model, InteropFixtures.Path(Path.Combine("dotnet_export", $"routing_depth{depth}.safetensors")));
        }
    }

    private static void WriteDotnetExport(int depth)
    {
        string folder = Path.Combine(FindRoot(), "tests", "WeightEnsemblingMoE.Tests", "Fixtures", "Interop", "dotnet_export");
        Directory.CreateDirectory(folder);
        using var model = Target(depth);
        using (no_grad())
        {
            using var generator = new Generator(11UL + (ulong)depth);
            foreach (var parameter in model.TrainableParameters())
            {
                parameter.add_(randn(parameter.shape, generator: generator) * 0.5);
            }
        }

        var routers = model.RouterStateDict();
        FusionBenchRouters.Save(Path.Combine(folder, $"routers_depth{depth}.pt"), routers);
        FusionBenchRouters.Save(Path.Combine(folder, $"routers_depth{depth}.safetensors"), routers);
        routers.Values.DisposeAll();

        var routing = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using var inputs = new Generator(21UL + (ulong)depth);
        using (no_grad())
        {
            foreach (var module in model.Modules)
            {
                var x = randn(new long[] { 2, 5, TinyClip.Config.HiddenSize }, generator: inputs);
                using var output = module.Module.forward(x);
                routing[$"x{module.LayerIndex}"] = x;
                routing[$"r{module.LayerIndex}"] = module.Module.LastRoutingWeights!.clone();
            }
        }

        SafeTensorsWriter.Save(Path.Combine(folder, $"routing_depth{depth}.safetensors"), routing);
        routing.Values.DisposeAll();
    }

    private static string FindRoot()
    {
        var directory = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "WeightEnsemblingMoE.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new DirectoryNotFoundException("The repository root (WeightEnsemblingMoE.sln) was not found.");
    }
}
