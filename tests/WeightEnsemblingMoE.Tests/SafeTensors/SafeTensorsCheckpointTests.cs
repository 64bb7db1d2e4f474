using TorchSharp;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors;

[TestFixture, NonParallelizable]
public sealed class SafeTensorsCheckpointTests
{
    private TempFolder _folder = null!;
    private Dictionary<string, Tensor> _tensors = null!;

    [SetUp]
    public void SetUp()
    {
        _folder = new TempFolder();
        _tensors = new Dictionary<string, Tensor>
        {
            ["a.weight"] = torch.arange(8, dtype: ScalarType.Float32).reshape(2, 4), // 32 bytes
            ["b.weight"] = torch.arange(6, dtype: ScalarType.Float64),              // 48 bytes
            ["c.bias"] = torch.arange(3, dtype: ScalarType.Int64),                  // 24 bytes
            ["d.flag"] = torch.tensor(new[] { true, false }),                       // 2 bytes
        };
    }

    [TearDown]
    public void TearDown()
    {
        foreach (var t in _tensors.Values)
        {
            t.Dispose();
        }
        _folder.Dispose();
    }

    private static void AssertSame(Dictionary<string, Tensor> expected, SafeTensorsCheckpoint checkpoint)
    {
        Assert.That(checkpoint.Names, Is.EqualTo(expected.Keys.Order(StringComparer.Ordinal)));
        foreach (var (name, tensor) in expected)
        {
            using var loaded = checkpoint.Load(name);
            Assert.That(loaded.dtype, Is.EqualTo(tensor.dtype), name);
            Assert.That(loaded.shape, Is.EqualTo(tensor.shape), name);
            Assert.That(loaded.bytes.ToArray(), Is.EqualTo(tensor.bytes.ToArray()), name);
        }
    }

    [Test]
    public void SaveSharded_OverLimit_WritesShardsAndIndexThatRoundTrip()
    {
        var written = SafeTensorsWriter.SaveSharded(_folder.Path, _tensors, maxShardBytes: 50);

        Assert.That(written.Select(Path.GetFileName), Is.EqualTo(new[]
        {
            "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
            "model.safetensors.index.json",
        }));
        using var checkpoint = SafeTensorsCheckpoint.Open(_folder.Path);
        Assert.That(checkpoint.ShardPaths, Has.Count.EqualTo(3));
        Assert.That(checkpoint.Metadata["total_size"], Is.EqualTo("106"));
        AssertSame(_tensors, checkpoint);
    }

    [Test]
    public void SaveSharded_FitsInOneShard_WritesSingleModelFile()
    {
        var written = SafeTensorsWriter.SaveSharded(_folder.Path, _tensors, maxShardBytes: 1 << 20);

        Assert.That(written.Select(Path.GetFileName), Is.EqualTo(new[] { "model.safetensors" }));
        Assert.That(File.Exists(_folder.File("model.safetensors.index.json")), Is.False);
        using var checkpoint = SafeTensorsCheckpoint.Open(_folder.Path);
        AssertSame(_tensors, checkpoint);
    }

    [Test]
    public void SaveSharded_AfterSingleFileSave_RemovesStaleSingleFile()
    {
        SafeTensorsWriter.SaveSharded(_folder.Path, _tensors, maxShardBytes: 1 << 20);
        SafeTensorsWriter.SaveSharded(_folder.Path, _tensors, maxShardBytes: 50);

        Assert.That(File.Exists(_folder.File("model.safetensors")), Is.False);
        using var checkpoint = SafeTensorsCheckpoint.Open(_folder.Path);
        Assert.That(checkpoint.ShardPaths, Has.Count.EqualTo(3));
    }

    [Test]
    public void Open_IndexFilePath_OpensShards()
    {
        SafeTensorsWriter.SaveSharded(_folder.Path, _tensors, maxShardBytes: 50);
        using var checkpoint = SafeTensorsCheckpoint.Open(_folder.File("model.safetensors.index.json"));
        AssertSame(_tensors, checkpoint);
    }

    [Test]
    public void Open_SingleSafeTensorsFile_ExposesItsTensorsAndMetadata()
    {
        var path = _folder.File("x.safetensors");
        SafeTensorsWriter.Save(path, _tensors, new Dictionary<string, string> { ["format"] = "pt" });
        using var checkpoint = SafeTensorsCheckpoint.Open(path);
        Assert.That(checkpoint.Metadata["format"], Is.EqualTo("pt"));
        AssertSame(_tensors, checkpoint);
    }

    [Test]
    public void LoadAll_Sharded_ReturnsEveryTensor()
    {
        SafeTensorsWriter.SaveSharded(_folder.Path, _tensors, maxShardBytes: 50);
        using var checkpoint = SafeTensorsCheckpoint.Open(_folder.Path);
        var all = checkpoint.LoadAll();
        try
        {
            Assert.That(all.Keys, Is.EquivalentTo(_tensors.Keys));
            Assert.That(all["c.bias"].data<long>().ToArray(), Is.EqualTo(new long[] { 0, 1, 2 }));
        }
        finally
        {
            foreach (var t in all.Values)
            {
                t.Dispose();
            }
        }
    }

    [Test]
    public void GetInfo_Sharded_ReportsOffsetsWithinShard()
    {
        SafeTensorsWriter.SaveSharded(_folder.Path, _tensors, maxShardBytes: 50);
        using var checkpoint = SafeTensorsCheckpoint.Open(_folder.Path);
        var info = checkpoint.GetInfo("c.bias");
        Assert.That(info.DType, Is.EqualTo(SafeTensorsDType.I64));
        Assert.That((info.Begin, info.End), Is.EqualTo((0L, 24L)));
    }

    [Test]
    public void Open_IndexNamingMissingShard_ThrowsFileNotFoundNamingShard()
    {
        SafeTensorsWriter.SaveSharded(_folder.Path, _tensors, maxShardBytes: 50);
        File.Delete(_folder.File("model-00002-of-00003.safetensors"));
        var ex = Assert.Throws<FileNotFoundException>(() => SafeTensorsCheckpoint.Open(_folder.Path).Dispose())!;
        Assert.That(ex.Message, Does.Contain("model-00002-of-00003.safetensors"));
    }

    [Test]
    public void Load_IndexMapsNameToShardLackingIt_ThrowsNamingTensorAndShard()
    {
        SafeTensorsWriter.SaveSharded(_folder.Path, _tensors, maxShardBytes: 50);
        var indexPath = _folder.File("model.safetensors.index.json");
        var text = File.ReadAllText(indexPath).Replace(
            "\"c.bias\":\"model-00003-of-00003.safetensors\"", "\"c.bias\":\"model-00001-of-00003.safetensors\"", StringComparison.Ordinal);
        Assert.That(text, Is.Not.EqualTo(File.ReadAllText(indexPath)), "the test failed to edit the index");
        File.WriteAllText(indexPath, text);

        using var checkpoint = SafeTensorsCheckpoint.Open(_folder.Path);
        var ex = Assert.Throws<SafeTensorsFormatException>(() => checkpoint.Load("c.bias").Dispose())!;
        Assert.That(ex.TensorName, Is.EqualTo("c.bias"));
        Assert.That(ex.FilePath, Does.EndWith("model-00001-of-00003.safetensors"));
    }

    [Test]
    public void Open_IndexWithPathOutsideFolder_Throws()
    {
        File.WriteAllText(_folder.File("model.safetensors.index.json"), "{\"weight_map\":{\"w\":\"../evil.safetensors\"}}");
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(_folder.Path).Dispose())!;
        Assert.That(ex.TensorName, Is.EqualTo("w"));
    }

    [Test]
    public void Open_FolderWithoutCheckpoint_ThrowsFileNotFound()
    {
        Assert.Throws<FileNotFoundException>(() => SafeTensorsCheckpoint.Open(_folder.Path).Dispose());
    }
}
