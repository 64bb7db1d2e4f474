using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors;

[TestFixture, NonParallelizable]
public sealed class StateDictTests
{
    private sealed class Tiny : nn.Module<Tensor, Tensor>
    {
#pragma warning disable IDE1006 // Names mirror PyTorch state-dict keys.
        private readonly Linear fc1;
        private readonly Tensor running;
#pragma warning restore IDE1006

        public Tiny() : base(nameof(Tiny))
        {
            fc1 = nn.Linear(3, 2);
            running = torch.zeros(2);
            register_buffer("running", running);
            RegisterComponents();
        }

        public override Tensor forward(Tensor input) => fc1.forward(input) + running;
    }

    private static Dictionary<string, Tensor> Values(ScalarType type = ScalarType.Float32) => new()
    {
        ["fc1.weight"] = torch.arange(6, dtype: type).reshape(2, 3),
        ["fc1.bias"] = torch.tensor(new[] { 10.0, 20.0 }).to_type(type),
        ["running"] = torch.tensor(new[] { 0.5, 1.5 }).to_type(type),
    };

    private static void DisposeAll(Dictionary<string, Tensor> tensors)
    {
        foreach (var t in tensors.Values)
        {
            t.Dispose();
        }
    }

    [Test]
    public void LoadInto_ExactMatch_CopiesParametersAndBuffers()
    {
        using var module = new Tiny();
        var values = Values();
        try
        {
            var report = StateDict.LoadInto(module, values);
            Assert.That(report.IsExactMatch, Is.True);
            Assert.That(report.LoadedKeys, Is.EqualTo(new[] { "fc1.bias", "fc1.weight", "running" }));
            var state = module.state_dict();
            Assert.That(state["fc1.weight"].data<float>().ToArray(), Is.EqualTo(new float[] { 0, 1, 2, 3, 4, 5 }));
            Assert.That(state["fc1.bias"].data<float>().ToArray(), Is.EqualTo(new float[] { 10, 20 }));
            Assert.That(state["running"].data<float>().ToArray(), Is.EqualTo(new float[] { 0.5f, 1.5f }));
        }
        finally
        {
            DisposeAll(values);
        }
    }

    [Test]
    public void LoadInto_Float64Values_ConvertsToModuleDType()
    {
        using var module = new Tiny();
        var values = Values(ScalarType.Float64);
        try
        {
            StateDict.LoadInto(module, values);
            var weight = module.state_dict()["fc1.weight"];
            Assert.That(weight.dtype, Is.EqualTo(ScalarType.Float32));
            Assert.That(weight.data<float>().ToArray(), Is.EqualTo(new float[] { 0, 1, 2, 3, 4, 5 }));
        }
        finally
        {
            DisposeAll(values);
        }
    }

    [Test]
    public void LoadInto_StrictWithProblems_ThrowsListingAllAndLeavesModuleUnchanged()
    {
        using var module = new Tiny();
        var before = StateDict.From(module);
        var values = Values();
        values["fc1.bias"].Dispose();
        values.Remove("fc1.bias");
        values["running"].Dispose();
        values["running"] = torch.zeros(3);
        values["extra"] = torch.zeros(1);
        try
        {
            var ex = Assert.Throws<StateDictLoadException>(() => StateDict.LoadInto(module, values))!;
            Assert.That(ex.Report.MissingKeys, Is.EqualTo(new[] { "fc1.bias" }));
            Assert.That(ex.Report.UnexpectedKeys, Is.EqualTo(new[] { "extra" }));
            Assert.That(ex.Report.ShapeMismatches.Single().Name, Is.EqualTo("running"));
            Assert.That(ex.Report.ShapeMismatches.Single().Expected, Is.EqualTo(new long[] { 2 }));
            Assert.That(ex.Report.ShapeMismatches.Single().Actual, Is.EqualTo(new long[] { 3 }));
            Assert.That(ex.Message, Does.Contain("fc1.bias").And.Contain("extra").And.Contain("running"));

            var after = module.state_dict();
            foreach (var (key, tensor) in before)
            {
                Assert.That(after[key].eq(tensor).all().item<bool>(), Is.True, key);
            }
        }
        finally
        {
            DisposeAll(values);
            DisposeAll(before);
        }
    }

    [Test]
    public void LoadInto_NonStrictWithProblems_CopiesMatchesAndReports()
    {
        using var module = new Tiny();
        var values = Values();
        values["running"].Dispose();
        values["running"] = torch.zeros(3);
        values["extra"] = torch.zeros(1);
        values["fc1.bias"].Dispose();
        values.Remove("fc1.bias");
        try
        {
            var report = StateDict.LoadInto(module, values, strict: false);
            Assert.That(report.LoadedKeys, Is.EqualTo(new[] { "fc1.weight" }));
            Assert.That(report.MissingKeys, Is.EqualTo(new[] { "fc1.bias" }));
            Assert.That(report.UnexpectedKeys, Is.EqualTo(new[] { "extra" }));
            Assert.That(report.ShapeMismatches.Select(m => m.Name), Is.EqualTo(new[] { "running" }));
            Assert.That(module.state_dict()["fc1.weight"].data<float>().ToArray(), Is.EqualTo(new float[] { 0, 1, 2, 3, 4, 5 }));
        }
        finally
        {
            DisposeAll(values);
        }
    }

    [Test]
    public void From_Module_ReturnsDetachedClones()
    {
        using var module = new Tiny();
        var state = StateDict.From(module);
        try
        {
            Assert.That(state.Keys, Is.EquivalentTo(new[] { "fc1.weight", "fc1.bias", "running" }));
            Assert.That(state["fc1.weight"].requires_grad, Is.False);
            state["running"].fill_(7);
            Assert.That(module.state_dict()["running"].data<float>().ToArray(), Is.EqualTo(new float[] { 0, 0 }));
        }
        finally
        {
            DisposeAll(state);
        }
    }

    [Test]
    public void FromSaveLoadInto_ThroughFile_ReproducesOutputs()
    {
        using var folder = new TempFolder();
        using var source = new Tiny();
        using var target = new Tiny();
        var state = StateDict.From(source);
        try
        {
            SafeTensorsWriter.Save(folder.File("m.safetensors"), state);
        }
        finally
        {
            DisposeAll(state);
        }

        using (var file = SafeTensorsFile.Open(folder.File("m.safetensors")))
        {
            var loaded = file.LoadAll();
            try
            {
                StateDict.LoadInto(target, loaded);
            }
            finally
            {
                DisposeAll(loaded);
            }
        }
        using var input = torch.randn(4, 3);
        using var expected = source.forward(input);
        using var actual = target.forward(input);
        Assert.That(actual.eq(expected).all().item<bool>(), Is.True);
    }
}
