using WeightEnsembling.Images;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Images;

/// <summary>
/// Decoding + CLIPImageProcessor against Pillow 9.4 + numpy (tools/fixtures/clip_preprocess_reference.py) on real
/// images of many formats and modes. The figures are printed and recorded in docs/benchmarks.md.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class PreprocessingVsPillowTests
{
    private static readonly Dictionary<string, ClipImageProcessor> Processors = new();

    private static ClipImageProcessor Processor(string config)
    {
        lock (Processors)
        {
            if (!Processors.TryGetValue(config, out var processor))
            {
                processor = ClipImageProcessor.FromPretrained(Path.Combine(ImageFixtures.Root, config));
                Processors[config] = processor;
            }
            return processor;
        }
    }

    // Every case but the 16-bit greyscale PNG (Pillow mode I), where the decoder keeps the high byte instead of
    // Pillow's clamp to 255 (see ImageDecoder).
    private static IEnumerable<ImageFixtures.Case> EightBitCases() => ImageFixtures.Cases().Where(c => c.Mode != "I");

    private static (long Values, long Exact, long WithinOne, int MaxDiff) Compare(ImageFixtures.Case c, bool highByte = false)
    {
        var image = ImageDecoder.Default.Decode(ImageFixtures.ImagePath(c));
        var actual = Processor(c.Config).ResizeAndCrop(image);
        var expected = highByte ? ImageFixtures.ExpectedHighByte(c) : ImageFixtures.ExpectedBytes(c);
        Assert.That(new[] { actual.Height, actual.Width, 3 }, Is.EqualTo(c.Shape), $"{c}: output shape");
        long exact = 0, withinOne = 0;
        int max = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            int d = Math.Abs(actual.Pixels[i] - expected[i]);
            exact += d == 0 ? 1 : 0;
            withinOne += d <= 1 ? 1 : 0;
            max = Math.Max(max, d);
        }
        return (expected.Length, exact, withinOne, max);
    }

    [TestCaseSource(nameof(EightBitCases))]
    public void ResizeAndCrop_MatchesPillowWithinOneGreyLevel(ImageFixtures.Case c)
    {
        var (values, exact, withinOne, max) = Compare(c);
        double exactShare = (double)exact / values, withinShare = (double)withinOne / values;
        TestContext.Out.WriteLine($"{c.Config,-8} {c.File,-32} {c.Mode,-5} {c.Width}x{c.Height} exact {exactShare:P3} within-1 {withinShare:P3} max {max}");
        Assert.That(withinShare, Is.GreaterThanOrEqualTo(0.999), $"{c}: share of values within one grey level of Pillow");
        Assert.That(exact, Is.EqualTo(values), $"{c}: measured exact on every value");
    }

    [Test]
    public void ResizeAndCrop_Grey16Png_MatchesPillowOnTheHighByte_NotPillowsClamp()
    {
        var c = ImageFixtures.Cases().Single(c => c.Mode == "I");
        var (values, exact, _, _) = Compare(c, highByte: true);
        var clamp = Compare(c);
        TestContext.Out.WriteLine($"{c}: vs Pillow on the high byte: exact {(double)exact / values:P3}; vs Pillow's mode I clamp: exact {(double)clamp.Exact / clamp.Values:P3}, max diff {clamp.MaxDiff}");

        Assert.That(exact, Is.EqualTo(values));
    }

    [Test]
    public void ResizeAndCrop_AllEightBitCases_MatchPillowExactly()
    {
        long values = 0, exact = 0, withinOne = 0;
        int max = 0;
        foreach (var c in EightBitCases())
        {
            var r = Compare(c);
            values += r.Values;
            exact += r.Exact;
            withinOne += r.WithinOne;
            max = Math.Max(max, r.MaxDiff);
        }
        TestContext.Out.WriteLine($"8-bit cases: {values} values, exact {(double)exact / values:P4}, within-1 {(double)withinOne / values:P4}, max diff {max}");
        // Measured: every value equal (Pillow 9.4.0 on Debian 12, SkiaSharp 3.119.4).
        Assert.That(exact, Is.EqualTo(values));
    }

    [TestCaseSource(nameof(FloatCases))]
    public void Preprocess_MatchesNormalisedNumpyOutput(ImageFixtures.Case c)
    {
        var image = ImageDecoder.Default.Decode(ImageFixtures.ImagePath(c));
        using var actual = Processor(c.Config).Preprocess(image);
        var expected = ImageFixtures.ExpectedFloats(c);
        Assert.That(actual.shape, Is.EqualTo(new long[] { 3, c.Shape[0], c.Shape[1] }));
        var values = actual.data<float>().ToArray();
        // One grey level is 1/255/std ≈ 0.0146; a value that matches Pillow exactly matches numpy to float32 rounding.
        int far = 0;
        double maxExactDiff = 0;
        var u8 = ImageFixtures.ExpectedBytes(c);
        var mine = Processor(c.Config).ResizeAndCrop(image).Pixels;
        int h = c.Shape[0], w = c.Shape[1];
        for (int ch = 0; ch < 3; ch++)
        {
            for (int p = 0; p < h * w; p++)
            {
                int i = (ch * h * w) + p;
                double d = Math.Abs(values[i] - expected[i]);
                if (mine[(p * 3) + ch] == u8[(p * 3) + ch])
                {
                    maxExactDiff = Math.Max(maxExactDiff, d);
                }
                else if (d > 0.02)
                {
                    far++;
                }
            }
        }
        TestContext.Out.WriteLine($"{c}: max |diff| where the uint8 values agree {maxExactDiff:E2}");
        Assert.That(maxExactDiff, Is.LessThanOrEqualTo(1e-6), "float32 rescale + normalise");
        Assert.That(far, Is.Zero, "values more than one grey level apart");
    }

    private static IEnumerable<ImageFixtures.Case> FloatCases() => ImageFixtures.Cases().Where(c => c.Float);
}
