using System.Diagnostics;
using System.Text;
using TorchSharp;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors;

[TestFixture, NonParallelizable]
public sealed class SafeTensorsAtomicAndLazyTests
{
    [Test]
    public void Save_TensorUnreadableMidWrite_LeavesOldFileIntactAndNoTempFile()
    {
        using var folder = new TempFolder();
        var path = folder.File("m.safetensors");
        using var good = torch.arange(4, dtype: ScalarType.Float32);
        SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["a"] = good });
        var before = File.ReadAllBytes(path);

        // A meta tensor has a dtype and a shape (so the header is written) but no data: copying it out fails mid-write.
        using var meta = torch.empty(new long[] { 1000 }, ScalarType.Float32, torch.META);
        Assert.Catch<Exception>(() =>
            SafeTensorsWriter.Save(path, new Dictionary<string, Tensor> { ["a"] = good, ["z_last"] = meta }));

        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
        Assert.That(Directory.GetFiles(folder.Path).Select(Path.GetFileName), Is.EqualTo(new[] { "m.safetensors" }));
    }

    [Test]
    public void Save_RenameFails_DeletesTempFile()
    {
        using var folder = new TempFolder();
        var target = folder.File("occupied");
        Directory.CreateDirectory(target);
        using var a = torch.ones(2);

        Assert.Catch<IOException>(() => SafeTensorsWriter.Save(target, new Dictionary<string, Tensor> { ["a"] = a }));

        Assert.That(Directory.GetFiles(folder.Path), Is.Empty);
        Assert.That(Directory.Exists(target), Is.True);
    }

    [Test]
    public void Load_SmallTensorFromLargeFile_DoesNotReadTheRest()
    {
        using var folder = new TempFolder();
        var path = folder.File("big.safetensors");
        const long bigBytes = 200L * 1024 * 1024;
        var header = Encoding.UTF8.GetBytes(
            $"{{\"a\":{{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}},\"big\":{{\"dtype\":\"U8\",\"shape\":[{bigBytes}],\"data_offsets\":[16,{16 + bigBytes}]}}}}");
        using (var stream = File.Create(path))
        {
            stream.Write(BitConverter.GetBytes((ulong)header.Length));
            stream.Write(header);
            foreach (var f in new[] { 1f, 2f, 3f, 4f })
            {
                stream.Write(BitConverter.GetBytes(f));
            }
            // The big tensor's bytes: a sparse hole of zeros, never written.
            stream.SetLength(stream.Position + bigBytes);
        }

        // Warm up libtorch, the JIT and the loader on another file so that only this file's reads are measured.
        var warmPath = folder.File("warm.safetensors");
        using (var warm = torch.ones(4))
        {
            SafeTensorsWriter.Save(warmPath, new Dictionary<string, Tensor> { ["w"] = warm });
        }
        using (var warmFile = SafeTensorsFile.Open(warmPath))
        using (var w = warmFile.Load("w"))
        {
            Assert.That(w.data<float>().ToArray(), Has.Length.EqualTo(4));
        }

        using var file = SafeTensorsFile.Open(path);
        var process = Process.GetCurrentProcess();
        process.Refresh();
        var before = process.WorkingSet64;
        using (var a = file.Load("a"))
        {
            Assert.That(a.data<float>().ToArray(), Is.EqualTo(new[] { 1f, 2f, 3f, 4f }));
        }
        process.Refresh();
        var afterSmall = process.WorkingSet64;

        // Positive control: loading the big tensor really does touch its 200 MB, and the measurement sees it.
        using (var big = file.Load("big"))
        {
            process.Refresh();
            var afterBig = process.WorkingSet64;
            TestContext.Out.WriteLine($"working set growth: small load {(afterSmall - before) >> 10} KiB, big load {(afterBig - afterSmall) >> 10} KiB");
            Assert.That(afterSmall - before, Is.LessThan(32L * 1024 * 1024), "loading 16 bytes grew the working set too much");
            Assert.That(afterBig - afterSmall, Is.GreaterThan(150L * 1024 * 1024), "loading 200 MB did not show in the working set");
            Assert.That(big.shape, Is.EqualTo(new[] { bigBytes }));
        }
    }
}
