using TorchSharp;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors;

/// <summary>Reads a file written by an independent Python writer (tools/fixtures/safetensors_fixture.py).</summary>
[TestFixture, NonParallelizable]
public sealed class SafeTensorsInteropTests
{
    private static string FixturePath =>
        Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "SafeTensors", "python_written.safetensors");

    [Test]
    public void Open_PythonWrittenFile_ListsNamesAndMetadata()
    {
        using var file = SafeTensorsFile.Open(FixturePath);
        Assert.That(file.Names, Is.EqualTo(new[]
        {
            "bf16", "bool", "f16", "f32", "f64", "i16", "i32", "i64", "i8", "scalar", "text.weight", "u8",
        }));
        Assert.That(file.Metadata["format"], Is.EqualTo("pt"));
        Assert.That(file.Metadata["writer"], Is.EqualTo("tools/fixtures/safetensors_fixture.py"));
    }

    [Test]
    public void Load_PythonWrittenFloats_HaveTheWrittenValues()
    {
        using var file = SafeTensorsFile.Open(FixturePath);
        using var f64 = file.Load("f64");
        using var f32 = file.Load("f32");
        using var f16 = file.Load("f16");
        using var bf16 = file.Load("bf16");
        using var scalar = file.Load("scalar");
        using var f16AsFloat = f16.to_type(ScalarType.Float32);
        using var bf16AsFloat = bf16.to_type(ScalarType.Float32);

        Assert.That(f64.shape, Is.EqualTo(new long[] { 2, 2 }));
        Assert.That(f64.data<double>().ToArray(), Is.EqualTo(new[] { 1.5, -2.25, 1e-300, Math.PI }));
        Assert.That(f32.data<float>().ToArray(), Is.EqualTo(new[] { 0.1f, -0.0f, 65504.5f }));
        Assert.That(float.IsNegative(f32.data<float>()[1]), Is.True, "the sign of -0.0 was lost");
        Assert.That(f16.dtype, Is.EqualTo(ScalarType.Float16));
        Assert.That(f16AsFloat.data<float>().ToArray(), Is.EqualTo(new[] { 1.0f, -0.5f }));
        Assert.That(bf16.dtype, Is.EqualTo(ScalarType.BFloat16));
        Assert.That(bf16AsFloat.data<float>().ToArray(), Is.EqualTo(new[] { 1.0f, -2.5f, 256.0f }));
        Assert.That(scalar.shape, Is.Empty);
        Assert.That(scalar.item<float>(), Is.EqualTo(2.5f));
    }

    [Test]
    public void Load_PythonWrittenIntegersAndBools_HaveTheWrittenValues()
    {
        using var file = SafeTensorsFile.Open(FixturePath);
        using var i64 = file.Load("i64");
        using var i32 = file.Load("i32");
        using var i16 = file.Load("i16");
        using var i8 = file.Load("i8");
        using var u8 = file.Load("u8");
        using var flags = file.Load("bool");
        using var empty = file.Load("text.weight");

        Assert.That(i64.data<long>().ToArray(), Is.EqualTo(new[] { -(1L << 62), (1L << 40) + 7 }));
        Assert.That(i32.shape, Is.EqualTo(new long[] { 1, 2 }));
        Assert.That(i32.data<int>().ToArray(), Is.EqualTo(new[] { -123456, 7 }));
        Assert.That(i16.data<short>().ToArray(), Is.EqualTo(new short[] { -300, 300 }));
        Assert.That(i8.data<sbyte>().ToArray(), Is.EqualTo(new sbyte[] { -128, 127 }));
        Assert.That(u8.data<byte>().ToArray(), Is.EqualTo(new byte[] { 0, 128, 255 }));
        Assert.That(flags.data<bool>().ToArray(), Is.EqualTo(new[] { true, false, true, true }));
        Assert.That(empty.shape, Is.EqualTo(new long[] { 0, 3 }));
    }

    [Test]
    public void Save_SameTensorsAsPythonWriter_ProducesIdenticalBytes()
    {
        using var folder = new TempFolder();
        var path = folder.File("dotnet.safetensors");
        using (var file = SafeTensorsFile.Open(FixturePath))
        {
            var tensors = file.LoadAll();
            try
            {
                SafeTensorsWriter.Save(path, tensors, file.Metadata);
            }
            finally
            {
                foreach (var t in tensors.Values)
                {
                    t.Dispose();
                }
            }
        }

        Assert.That(File.ReadAllBytes(path), Is.EqualTo(File.ReadAllBytes(FixturePath)));
    }
}
