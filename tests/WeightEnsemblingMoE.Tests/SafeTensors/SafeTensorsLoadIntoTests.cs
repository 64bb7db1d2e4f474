using TorchSharp;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors;

/// <summary><see cref="SafeTensorsFile.LoadInto"/> (bytes straight into existing parameters) equals LoadAll + StateDict.LoadInto.</summary>
[TestFixture, NonParallelizable]
public sealed class SafeTensorsLoadIntoTests
{
    private static nn.Module Model(long seed)
    {
        torch.manual_seed(seed);
        return nn.Sequential(("fc1", nn.Linear(7, 5)), ("fc2", nn.Linear(5, 3)));
    }

    [Test]
    public void LoadInto_SameDType_EqualsLoadAllThenStateDictLoadInto()
    {
        using var folder = new TempFolder();
        using var scope = NewDisposeScope();
        using var source = Model(1);
        var path = folder.File("m.safetensors");
        SafeTensorsWriter.Save(path, source.state_dict());
        using var fast = Model(2);
        using var simple = Model(3);

        using var file = SafeTensorsFile.Open(path);
        var report = file.LoadInto(fast);
        StateDict.LoadInto(simple, file.LoadAll());

        Assert.That(report.LoadedKeys, Has.Count.EqualTo(4));
        foreach (var (key, value) in simple.state_dict())
        {
            Assert.That(fast.state_dict()[key].eq(value).all().item<bool>(), Is.True, key);
            Assert.That(value.eq(source.state_dict()[key]).all().item<bool>(), Is.True, key);
        }
    }

    [Test]
    public void LoadInto_OtherDType_ConvertsLikeCopy()
    {
        using var folder = new TempFolder();
        using var scope = NewDisposeScope();
        using var source = Model(1);
        var path = folder.File("m.safetensors");
        SafeTensorsWriter.Save(path, source.state_dict());
        using var target = Model(2);
        target.to(ScalarType.Float64);

        using var file = SafeTensorsFile.Open(path);
        file.LoadInto(target);

        var expected = source.state_dict()["fc1.weight"].to(ScalarType.Float64);
        Assert.That(target.state_dict()["fc1.weight"].eq(expected).all().item<bool>(), Is.True);
    }

    [Test]
    public void LoadInto_StrictWithMissingKey_ThrowsAndLeavesModuleUnchanged()
    {
        using var folder = new TempFolder();
        using var scope = NewDisposeScope();
        using var source = Model(1);
        var path = folder.File("m.safetensors");
        SafeTensorsWriter.Save(path, source.state_dict().Where(p => p.Key != "fc2.bias").ToDictionary(p => p.Key, p => p.Value));
        using var target = Model(2);
        var before = target.state_dict()["fc1.weight"].clone();

        using var file = SafeTensorsFile.Open(path);
        var exception = Assert.Throws<StateDictLoadException>(() => file.LoadInto(target));

        Assert.That(exception!.Report.MissingKeys, Is.EqualTo(new[] { "fc2.bias" }));
        Assert.That(target.state_dict()["fc1.weight"].eq(before).all().item<bool>(), Is.True);
    }
}
