namespace WeightEnsembling.Images;

/// <summary>
/// Pillow's separable convolution resize (<c>src/libImaging/Resample.c</c>) for 8-bit RGB: a horizontal pass over the
/// rows the vertical pass needs, then a vertical pass, each rounding to uint8. Coefficients come from the filter with
/// its support scaled by the downscale factor (antialiasing), are normalised to sum 1, then quantised to fixed point with
/// 22 fractional bits (32 − 8 − 2); sums start at half a unit and are shifted down and clamped to [0, 255].
/// </summary>
internal static class PillowResampler
{
    private const int PrecisionBits = 32 - 8 - 2;

    /// <summary>The filters of Pillow's <c>Image.Resampling</c>, by their numeric value.</summary>
    public static (Func<double, double> Filter, double Support) Filter(int resample, string option) => resample switch
    {
        2 => (Bilinear, 1.0),
        3 => (Bicubic, 2.0),
        _ => throw new ArgumentException($"{option} = {resample} is not supported; use 2 (bilinear) or 3 (bicubic)."),
    };

    public static RgbImage Resize(RgbImage image, int width, int height, int resample)
    {
        var (filter, support) = Filter(resample, "resample");
        if (width == image.Width && height == image.Height)
        {
            return new RgbImage(width, height, (byte[])image.Pixels.Clone());
        }
        var (vBounds, vKernel, vSize) = Coefficients(image.Height, height, filter, support);
        int first = vBounds[0];
        int last = vBounds[(height * 2) - 2] + vBounds[(height * 2) - 1];
        var source = image.Pixels;
        int sourceWidth = image.Width;
        int rows = image.Height;
        int rowOffset = 0;
        if (width != image.Width)
        {
            var (hBounds, hKernel, hSize) = Coefficients(image.Width, width, filter, support);
            rows = last - first;
            var temp = new byte[(long)width * rows * 3];
            for (int y = 0; y < rows; y++)
            {
                long inRow = (long)(y + first) * sourceWidth * 3;
                long outRow = (long)y * width * 3;
                for (int x = 0; x < width; x++)
                {
                    int xmin = hBounds[x * 2], xmax = hBounds[(x * 2) + 1];
                    int k = x * hSize;
                    int s0 = 1 << (PrecisionBits - 1), s1 = s0, s2 = s0;
                    for (int i = 0; i < xmax; i++)
                    {
                        long p = inRow + ((long)(xmin + i) * 3);
                        int c = hKernel[k + i];
                        s0 += source[p] * c;
                        s1 += source[p + 1] * c;
                        s2 += source[p + 2] * c;
                    }
                    temp[outRow + (x * 3)] = Clip8(s0);
                    temp[outRow + (x * 3) + 1] = Clip8(s1);
                    temp[outRow + (x * 3) + 2] = Clip8(s2);
                }
            }
            source = temp;
            sourceWidth = width;
            rowOffset = first;
        }
        if (height == image.Height)
        {
            return new RgbImage(width, height, source);
        }
        var output = new byte[(long)width * height * 3];
        for (int y = 0; y < height; y++)
        {
            int ymin = vBounds[y * 2] - rowOffset, ymax = vBounds[(y * 2) + 1];
            int k = y * vSize;
            long outRow = (long)y * width * 3;
            for (int x = 0; x < width; x++)
            {
                int s0 = 1 << (PrecisionBits - 1), s1 = s0, s2 = s0;
                for (int i = 0; i < ymax; i++)
                {
                    long p = (((long)(ymin + i) * sourceWidth) + x) * 3;
                    int c = vKernel[k + i];
                    s0 += source[p] * c;
                    s1 += source[p + 1] * c;
                    s2 += source[p + 2] * c;
                }
                output[outRow + (x * 3)] = Clip8(s0);
                output[outRow + (x * 3) + 1] = Clip8(s1);
                output[outRow + (x * 3) + 2] = Clip8(s2);
            }
        }
        return new RgbImage(width, height, output);
    }

    private static byte Clip8(int sum)
    {
        int value = sum >> PrecisionBits;
        return value < 0 ? (byte)0 : value > 255 ? (byte)255 : (byte)value;
    }

    // precompute_coeffs + normalize_coeffs_8bpc: per output pixel, the first input index and the tap count, and the
    // taps in fixed point (rounded half away from zero).
    private static (int[] Bounds, int[] Kernel, int Size) Coefficients(int inSize, int outSize, Func<double, double> filter, double filterSupport)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = filterSupport * filterScale;
        int size = ((int)Math.Ceiling(support) * 2) + 1;
        var bounds = new int[outSize * 2];
        var kernel = new int[outSize * size];
        var taps = new double[size];
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale;
            double ss = 1.0 / filterScale;
            int xmin = Math.Max((int)(center - support + 0.5), 0);
            int xmax = Math.Min((int)(center + support + 0.5), inSize) - xmin;
            double total = 0;
            for (int x = 0; x < xmax; x++)
            {
                double w = filter((x + xmin - center + 0.5) * ss);
                taps[x] = w;
                total += w;
            }
            for (int x = 0; x < xmax; x++)
            {
                double w = total != 0.0 ? taps[x] / total : taps[x];
                kernel[(xx * size) + x] = w < 0 ? (int)(-0.5 + (w * (1 << PrecisionBits))) : (int)(0.5 + (w * (1 << PrecisionBits)));
            }
            bounds[xx * 2] = xmin;
            bounds[(xx * 2) + 1] = xmax;
        }
        return (bounds, kernel, size);
    }

    private static double Bicubic(double x)
    {
        const double a = -0.5;
        x = Math.Abs(x);
        if (x < 1.0)
        {
            return ((((a + 2.0) * x) - (a + 3.0)) * x * x) + 1;
        }
        if (x < 2.0)
        {
            return ((((x - 5) * x) + 8) * x - 4) * a;
        }
        return 0.0;
    }

    private static double Bilinear(double x)
    {
        x = Math.Abs(x);
        return x < 1.0 ? 1.0 - x : 0.0;
    }
}
