using BenchmarkDotNet.Attributes;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Benchmarks;

/// <summary>
/// Benchmark 6: reading every tensor of a ViT-B/32 safetensors file (335 MiB, warm page cache) into tensors, vs a plain
/// sequential <see cref="FileStream"/> read of the same file into a reused 1 MiB buffer; plus the fair baselines and
/// paths for "allocate + read" (a FileStream read into a fresh native buffer of the file's size) and "read into existing
/// memory" (<see cref="SafeTensorsFile.LoadInto"/> into a model built once).
/// </summary>
public class SafeTensorsReadBenchmarks
{
    private string folder = null!, file = null!;
    private readonly byte[] buffer = new byte[1 << 20];
    private ClipVisionModel target = null!;

    [GlobalSetup]
    public void Setup()
    {
        BenchmarkSettings.SetThreads();
        folder = Path.Combine(Path.GetTempPath(), "wemoe-bench-read-" + Environment.ProcessId);
        using (var model = VitB32.Dense())
        {
            model.SaveTo(folder);
        }

        file = Path.Combine(folder, "model.safetensors");
        target = new ClipVisionModel(new ClipVisionConfig());
        Console.WriteLine($"// file: {file}, {new FileInfo(file).Length} bytes");
    }

    [Benchmark(Baseline = true, Description = "FileStream sequential read")]
    public long FileStreamRead()
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        long total = 0;
        int read;
        while ((read = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            total += read;
        }

        return total;
    }

    [Benchmark(Description = "SafeTensorsFile.LoadAll")]
    public int SafeTensorsLoadAll()
    {
        using var scope = NewDisposeScope();
        using var safeTensors = SafeTensorsFile.Open(file);
        var tensors = safeTensors.LoadAll();
        return tensors.Count;
    }

    /// <summary>Allocate + read: the file read into a fresh native buffer of its size (what LoadAll must also do).</summary>
    [Benchmark(Description = "FileStream read into a fresh file-sized native buffer")]
    public long FileStreamReadFreshBuffer()
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        using var destination = empty(stream.Length, ScalarType.Byte);
        var span = destination.bytes;
        long total = 0;
        int read;
        while ((read = stream.Read(span[(int)total..])) > 0)
        {
            total += read;
        }

        return total;
    }

    [Benchmark(Description = "SafeTensorsFile.LoadInto (existing model)")]
    public int SafeTensorsLoadInto()
    {
        using var safeTensors = SafeTensorsFile.Open(file);
        return safeTensors.LoadInto(target).LoadedKeys.Count;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        target.Dispose();
        Directory.Delete(folder, recursive: true);
    }
}
