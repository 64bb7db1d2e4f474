using WeightEnsembling.Images;
using WeightEnsembling.Tests.SafeTensors;

namespace WeightEnsembling.Tests.Images;

[TestFixture, NonParallelizable]
public sealed class ImageDecoderTests
{
    private static string Fixture(string name) => Path.Combine(ImageFixtures.Root, "images", name);

    [Test]
    public void Decode_ExifOrientation6_SwapsWidthAndHeight()
    {
        var image = ImageDecoder.Default.Decode(Fixture("photo_exif6_200x150.jpg"));
        var raw = new ImageDecoder { ApplyExifOrientation = false }.Decode(Fixture("photo_exif6_200x150.jpg"));

        Assert.That((image.Width, image.Height), Is.EqualTo((150, 200)));
        Assert.That((raw.Width, raw.Height), Is.EqualTo((200, 150)));
        // Rotated 90° clockwise: the top-left output pixel is the bottom-left stored pixel.
        Assert.That(image.Pixels[..3], Is.EqualTo(raw.Pixels[((149 * 200) * 3)..((149 * 200 * 3) + 3)]));
    }

    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    [TestCase(5)]
    [TestCase(6)]
    [TestCase(7)]
    [TestCase(8)]
    public void Orient_MatchesPillowTransposeOfA2x3Image(int orientation)
    {
        // Pixel value = 10 * row + column (all channels), 3 wide and 2 high.
        var pixels = new byte[2 * 3 * 3];
        for (int y = 0; y < 2; y++)
        {
            for (int x = 0; x < 3; x++)
            {
                pixels[((y * 3) + x) * 3] = (byte)((10 * y) + x);
            }
        }
        var result = ImageDecoder.Orient(new RgbImage(3, 2, pixels), orientation);
        // PIL.ImageOps.exif_transpose of that image, red channel, row by row (Pillow 9.4).
        var expected = orientation switch
        {
            2 => new byte[] { 2, 1, 0, 12, 11, 10 },
            3 => new byte[] { 12, 11, 10, 2, 1, 0 },
            4 => new byte[] { 10, 11, 12, 0, 1, 2 },
            5 => new byte[] { 0, 10, 1, 11, 2, 12 },
            6 => new byte[] { 10, 0, 11, 1, 12, 2 },
            7 => new byte[] { 12, 2, 11, 1, 10, 0 },
            _ => new byte[] { 2, 12, 1, 11, 0, 10 },
        };
        Assert.That(result.Pixels.Where((_, i) => i % 3 == 0).ToArray(), Is.EqualTo(expected));
    }

    [Test]
    public void Decode_MoreThanMaxPixels_ThrowsNamingFileAndLimit()
    {
        var decoder = new ImageDecoder { MaxPixels = 1000 };
        string path = Fixture("photo_rgb_300x199.jpg");

        var e = Assert.Throws<InvalidDataException>(() => decoder.Decode(path));

        Assert.That(e!.Message, Does.Contain(path).And.Contain("1000").And.Contain("decompression bomb"));
    }

    [Test]
    public void Decode_TruncatedJpeg_ThrowsNamingFile()
    {
        using var folder = new TempFolder();
        var bytes = File.ReadAllBytes(Fixture("photo_rgb_300x199.jpg"));
        string path = folder.File("cut.jpg");
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);

        var e = Assert.Throws<InvalidDataException>(() => ImageDecoder.Default.Decode(path));

        Assert.That(e!.Message, Does.Contain(path).And.Contain("truncated"));
    }

    [Test]
    public void Decode_TruncatedPng_ThrowsNamingFile()
    {
        var bytes = File.ReadAllBytes(Fixture("photo_grey_150x100.png"));

        var e = Assert.Throws<InvalidDataException>(() => ImageDecoder.Default.Decode(bytes.AsSpan(0, bytes.Length / 3), "cut.png"));

        Assert.That(e!.Message, Does.Contain("cut.png"));
    }

    [Test]
    public void Decode_NotAnImage_ThrowsNamingSource()
    {
        var e = Assert.Throws<InvalidDataException>(() => ImageDecoder.Default.Decode("hello, world"u8, "notes.txt"));

        Assert.That(e!.Message, Does.Contain("notes.txt"));
    }

    [Test]
    public void Decode_MissingFile_ThrowsNamingFile()
    {
        var e = Assert.Throws<InvalidDataException>(() => ImageDecoder.Default.Decode("/nonexistent/x.png"));

        Assert.That(e!.Message, Does.Contain("/nonexistent/x.png"));
    }

    [Test]
    public void Decode_Grey16Png_KeepsTheHighByte()
    {
        // The fixture's 16-bit values run from 48 to 963 (Pillow: mode I, min 48, max 963).
        var image = ImageDecoder.Default.Decode(Fixture("photo_grey16_120x90.png"));

        Assert.That(image.Pixels.Min(), Is.EqualTo(48 >> 8));
        Assert.That(image.Pixels.Max(), Is.EqualTo(963 >> 8));
    }

    [Test]
    public void ToTensor_GivesHeightWidthChannels()
    {
        var image = new RgbImage(2, 1, [1, 2, 3, 4, 5, 6]);
        using var t = image.ToTensor();

        Assert.That(t.shape, Is.EqualTo(new long[] { 1, 2, 3 }));
        Assert.That(t.data<byte>().ToArray(), Is.EqualTo(new byte[] { 1, 2, 3, 4, 5, 6 }));
    }
}
