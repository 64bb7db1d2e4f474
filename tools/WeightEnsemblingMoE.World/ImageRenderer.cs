using SkiaSharp;
using WeightEnsembling.Images;

namespace WeightEnsembling.World;

/// <summary>Renders items into RGB images under an <see cref="Augmentation"/>: SVG through librsvg, bitmaps and glyphs through SkiaSharp.</summary>
public static class ImageRenderer
{
    /// <summary>Renders an SVG document; <c>currentColor</c> becomes the augmentation's foreground.</summary>
    public static RgbImage Svg(string svg, Augmentation augmentation, int size, string source)
    {
        ArgumentNullException.ThrowIfNull(augmentation);
        string coloured = svg.Replace("currentColor", augmentation.ForegroundHex, StringComparison.Ordinal);
        var bg = augmentation.Background;
        return new RgbImage(size, size, SvgRasterizer.Render(coloured, size, (bg[0], bg[1], bg[2]), augmentation.Box(size), source));
    }

    /// <summary>Draws a bitmap with alpha (e.g. an emoji PNG) into the augmentation's box, aspect kept.</summary>
    public static RgbImage Bitmap(SKBitmap bitmap, Augmentation augmentation, int size)
    {
        ArgumentNullException.ThrowIfNull(bitmap);
        ArgumentNullException.ThrowIfNull(augmentation);
        return Draw(augmentation, size, (canvas, box) =>
        {
            using var image = SKImage.FromBitmap(bitmap);
            float scale = Math.Min(box.Width / bitmap.Width, box.Height / bitmap.Height);
            float w = bitmap.Width * scale, h = bitmap.Height * scale;
            var dest = SKRect.Create(box.MidX - (w / 2), box.MidY - (h / 2), w, h);
            canvas.DrawImage(image, dest, new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.Linear));
        });
    }

    /// <summary>Draws a grey image as coverage (255 = foreground, 0 = background), e.g. a Fashion-MNIST or digit image.</summary>
    public static RgbImage Grey(byte[] grey, int width, int height, Augmentation augmentation, int size)
    {
        ArgumentNullException.ThrowIfNull(grey);
        ArgumentNullException.ThrowIfNull(augmentation);
        if (augmentation.NativeColours && !augmentation.SourceColours)
        {
            // As published: white ink on black.
            augmentation = augmentation with { Background = [0, 0, 0], Foreground = [255, 255, 255] };
        }

        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        var fg = augmentation.Foreground;
        var pixels = new byte[width * height * 4];
        for (int i = 0; i < width * height; i++)
        {
            pixels[i * 4] = fg[0];
            pixels[(i * 4) + 1] = fg[1];
            pixels[(i * 4) + 2] = fg[2];
            pixels[(i * 4) + 3] = grey[i];
        }

        System.Runtime.InteropServices.Marshal.Copy(pixels, 0, bitmap.GetPixels(), pixels.Length);
        return Bitmap(bitmap, augmentation, size);
    }

    /// <summary>Draws text (one glyph) in the augmentation's foreground, its ink box fitted into the augmentation's box.</summary>
    public static RgbImage Glyph(SKTypeface typeface, string text, Augmentation augmentation, int size)
    {
        ArgumentNullException.ThrowIfNull(typeface);
        ArgumentNullException.ThrowIfNull(augmentation);
        return Draw(augmentation, size, (canvas, box) =>
        {
            using var font = new SKFont(typeface, 100f) { Edging = SKFontEdging.Antialias, Subpixel = true };
            font.MeasureText(text, out var ink);
            if (ink.Width <= 0 || ink.Height <= 0)
            {
                throw new InvalidDataException($"The font {typeface.FamilyName} draws nothing for '{text}'.");
            }

            float scale = Math.Min(box.Width / ink.Width, box.Height / ink.Height);
            var fg = augmentation.Foreground;
            using var paint = new SKPaint { Color = new SKColor(fg[0], fg[1], fg[2]), IsAntialias = true };
            canvas.Save();
            canvas.Translate(box.MidX, box.MidY);
            canvas.Scale(scale);
            canvas.Translate(-ink.MidX, -ink.MidY);
            canvas.DrawText(text, 0, 0, font, paint);
            canvas.Restore();
        });
    }

    /// <summary>Encodes an RGB image as PNG bytes.</summary>
    public static byte[] EncodePng(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        using var bitmap = new SKBitmap(new SKImageInfo(image.Width, image.Height, SKColorType.Rgba8888, SKAlphaType.Opaque));
        var rgba = new byte[image.Width * image.Height * 4];
        for (int i = 0; i < image.Width * image.Height; i++)
        {
            rgba[i * 4] = image.Pixels[i * 3];
            rgba[(i * 4) + 1] = image.Pixels[(i * 3) + 1];
            rgba[(i * 4) + 2] = image.Pixels[(i * 3) + 2];
            rgba[(i * 4) + 3] = 255;
        }

        System.Runtime.InteropServices.Marshal.Copy(rgba, 0, bitmap.GetPixels(), rgba.Length);
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    private static RgbImage Draw(Augmentation augmentation, int size, Action<SKCanvas, SKRect> draw)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(size, size, SKColorType.Rgba8888, SKAlphaType.Premul));
        using (var canvas = new SKCanvas(bitmap))
        {
            var bg = augmentation.Background;
            canvas.Clear(new SKColor(bg[0], bg[1], bg[2]));
            var (x, y, w, h) = augmentation.Box(size);
            draw(canvas, SKRect.Create((float)x, (float)y, (float)w, (float)h));
            canvas.Flush();
        }

        var rgba = bitmap.GetPixelSpan();
        var rgb = new byte[size * size * 3];
        for (int i = 0; i < size * size; i++)
        {
            rgb[i * 3] = rgba[i * 4];
            rgb[(i * 3) + 1] = rgba[(i * 4) + 1];
            rgb[(i * 3) + 2] = rgba[(i * 4) + 2];
        }

        return new RgbImage(size, size, rgb);
    }
}
