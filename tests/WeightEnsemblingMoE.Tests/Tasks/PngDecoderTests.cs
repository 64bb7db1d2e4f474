using TorchSharp;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.Tests.Tasks;

[TestFixture, NonParallelizable]
public sealed class PngDecoderTests
{
    private static byte[] RandomPixels(int count, int seed)
    {
        var random = new Random(seed);
        var pixels = new byte[count];
        random.NextBytes(pixels);
        return pixels;
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    public void Decode_GreyWithEachFilter_ReturnsExactPixels(int filter)
    {
        var pixels = RandomPixels(7 * 5, filter);
        var png = TestPng.Encode(pixels, 7, 5, colorType: 0, _ => (byte)filter);

        using var image = PngDecoder.Decode(png, "grey.png");

        Assert.That(image.shape, Is.EqualTo(new long[] { 5, 7, 1 }));
        Assert.That(image.data<byte>().ToArray(), Is.EqualTo(pixels));
    }

    [TestCase(2, 3)]
    [TestCase(6, 4)]
    [TestCase(4, 2)]
    public void Decode_ColourWithMixedFilters_ReturnsExactPixels(int colorType, int channels)
    {
        var pixels = RandomPixels(6 * 4 * channels, colorType);
        var png = TestPng.Encode(pixels, 6, 4, colorType, y => (byte)(y % 5));

        using var image = PngDecoder.Decode(png, "colour.png");

        Assert.That(image.shape, Is.EqualTo(new long[] { 4, 6, channels }));
        Assert.That(image.data<byte>().ToArray(), Is.EqualTo(pixels));
    }

    [Test]
    public void Decode_WithCorruptCrc_ThrowsNamingChunk()
    {
        var png = TestPng.Encode(RandomPixels(16, 1), 4, 4, 0, _ => 0);
        png[^20] ^= 0xFF; // inside the IDAT data

        var e = Assert.Throws<InvalidDataException>(() => PngDecoder.Decode(png, "bad.png"));
        Assert.That(e!.Message, Does.Contain("bad.png").And.Contain("IDAT").And.Contain("CRC"));
    }

    [Test]
    public void Decode_Interlaced_ThrowsNamingInterlace()
    {
        var png = TestPng.Encode(RandomPixels(16, 2), 4, 4, 0, _ => 0, interlace: 1);

        var e = Assert.Throws<InvalidDataException>(() => PngDecoder.Decode(png, "adam7.png"));
        Assert.That(e!.Message, Does.Contain("interlaced"));
    }

    [Test]
    public void Decode_SixteenBit_ThrowsNamingBitDepth()
    {
        var png = TestPng.Encode(RandomPixels(32, 3), 4, 4, 0, _ => 0, bitDepth: 16);

        var e = Assert.Throws<InvalidDataException>(() => PngDecoder.Decode(png, "deep.png"));
        Assert.That(e!.Message, Does.Contain("bit depth 16"));
    }

    [Test]
    public void Decode_NotAPng_ThrowsNamingSource()
    {
        var e = Assert.Throws<InvalidDataException>(() => PngDecoder.Decode([1, 2, 3, 4, 5, 6, 7, 8, 9], "text.txt"));
        Assert.That(e!.Message, Does.Contain("text.txt").And.Contain("signature"));
    }

    [Test]
    public void Decode_TruncatedAfterHeader_ThrowsTruncated()
    {
        var png = TestPng.Encode(RandomPixels(16, 4), 4, 4, 0, _ => 0);

        var e = Assert.Throws<InvalidDataException>(() => PngDecoder.Decode(png[..40], "cut.png"));
        Assert.That(e!.Message, Does.Contain("cut.png").And.Contain("truncated"));
    }
}
