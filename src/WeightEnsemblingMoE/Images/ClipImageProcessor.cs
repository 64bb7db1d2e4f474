using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Images;

/// <summary>
/// The image preprocessing of transformers' <c>CLIPImageProcessor</c> (its PIL-backed path), read from a checkpoint's
/// <c>preprocessor_config.json</c>: RGB conversion, resize of the shortest side with Pillow's antialiased bicubic (or
/// to a fixed height and width), centre crop (zero padding when the crop is larger), rescale and normalise, giving
/// float32 <c>[3, H, W]</c>.
/// </summary>
/// <remarks>
/// The output size follows transformers' <c>get_resize_output_image_size</c>: the short side becomes
/// <see cref="ShortestEdge"/> and the long side <c>int(ShortestEdge × long / short)</c>; an image whose short side
/// already has that length is not resampled. Instances are immutable and safe to share between threads.
/// </remarks>
public sealed class ClipImageProcessor
{
    /// <summary>Whether images are resized. The default value is <see langword="true"/>.</summary>
    public bool DoResize { get; init; } = true;

    /// <summary>
    /// The target length of the shorter side (<c>size.shortest_edge</c>, or an integer <c>size</c>); <see langword="null"/>
    /// when <see cref="ResizeHeight"/> and <see cref="ResizeWidth"/> are used. The default value is 224.
    /// </summary>
    public int? ShortestEdge { get; init; } = 224;

    /// <summary>The fixed output height of the resize (<c>size.height</c>), used when <see cref="ShortestEdge"/> is <see langword="null"/>. The default value is <see langword="null"/>.</summary>
    public int? ResizeHeight { get; init; }

    /// <summary>The fixed output width of the resize (<c>size.width</c>), used when <see cref="ShortestEdge"/> is <see langword="null"/>. The default value is <see langword="null"/>.</summary>
    public int? ResizeWidth { get; init; }

    /// <summary>The Pillow resampling filter: 3 (bicubic) or 2 (bilinear). The default value is 3.</summary>
    public int Resample { get; init; } = 3;

    /// <summary>Whether images are centre-cropped. The default value is <see langword="true"/>.</summary>
    public bool DoCenterCrop { get; init; } = true;

    /// <summary>The crop height (<c>crop_size.height</c>). The default value is 224.</summary>
    public int CropHeight { get; init; } = 224;

    /// <summary>The crop width (<c>crop_size.width</c>). The default value is 224.</summary>
    public int CropWidth { get; init; } = 224;

    /// <summary>Whether pixel values are multiplied by <see cref="RescaleFactor"/>. The default value is <see langword="true"/>.</summary>
    public bool DoRescale { get; init; } = true;

    /// <summary>The rescale factor. The default value is 1/255.</summary>
    public double RescaleFactor { get; init; } = 1.0 / 255.0;

    /// <summary>Whether channels are normalised with <see cref="ImageMean"/> and <see cref="ImageStd"/>. The default value is <see langword="true"/>.</summary>
    public bool DoNormalize { get; init; } = true;

    /// <summary>The per-channel mean. The default value is OpenAI CLIP's (0.48145466, 0.4578275, 0.40821073).</summary>
    public IReadOnlyList<float> ImageMean { get; init; } = [0.48145466f, 0.4578275f, 0.40821073f];

    /// <summary>The per-channel standard deviation. The default value is OpenAI CLIP's (0.26862954, 0.26130258, 0.27577711).</summary>
    public IReadOnlyList<float> ImageStd { get; init; } = [0.26862954f, 0.26130258f, 0.27577711f];

    /// <summary>
    /// Whether images are converted to RGB. Decoded images always are (see <see cref="ImageDecoder"/>), so this flag is
    /// recorded from the configuration only. The default value is <see langword="true"/>.
    /// </summary>
    public bool DoConvertRgb { get; init; } = true;

    /// <summary>The height of <see cref="Preprocess(RgbImage)"/>'s output for every input, or <see langword="null"/> when it depends on the input.</summary>
    public int? OutputHeight => DoCenterCrop ? CropHeight : DoResize && ShortestEdge is null ? ResizeHeight : null;

    /// <summary>The width of <see cref="Preprocess(RgbImage)"/>'s output for every input, or <see langword="null"/> when it depends on the input.</summary>
    public int? OutputWidth => DoCenterCrop ? CropWidth : DoResize && ShortestEdge is null ? ResizeWidth : null;

    /// <summary>Reads <c>preprocessor_config.json</c> from a checkpoint folder.</summary>
    /// <param name="folder">The folder holding <c>preprocessor_config.json</c>.</param>
    /// <returns>The processor.</returns>
    /// <exception cref="FileNotFoundException">The folder has no <c>preprocessor_config.json</c>.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON or holds a bad value; the message names the file and the key.</exception>
    public static ClipImageProcessor FromPretrained(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        string path = Path.Combine(folder, "preprocessor_config.json");
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"'{folder}' has no preprocessor_config.json.", path);
        }
        return FromJson(File.ReadAllText(path), path);
    }

    /// <summary>Parses the JSON of a <c>preprocessor_config.json</c>; keys it omits keep CLIPImageProcessor's defaults.</summary>
    /// <param name="json">The JSON text.</param>
    /// <param name="source">A name for the configuration in error messages.</param>
    /// <returns>The processor.</returns>
    /// <exception cref="InvalidDataException">The JSON is invalid or holds a bad value; the message names <paramref name="source"/> and the key.</exception>
    public static ClipImageProcessor FromJson(string json, string source = "preprocessor_config.json")
    {
        ArgumentNullException.ThrowIfNull(json);
        ArgumentNullException.ThrowIfNull(source);
        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(json);
            root = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{source}' is not valid JSON: {e.Message}", e);
        }
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"'{source}' must hold a JSON object.");
        }
        try
        {
            var defaults = new ClipImageProcessor();
            int? shortest = defaults.ShortestEdge, height = null, width = null;
            if (root.TryGetProperty("size", out var size))
            {
                if (size.ValueKind == JsonValueKind.Number)
                {
                    shortest = size.GetInt32();
                }
                else if (size.TryGetProperty("shortest_edge", out var edge))
                {
                    shortest = edge.GetInt32();
                }
                else if (size.TryGetProperty("height", out var h) && size.TryGetProperty("width", out var w))
                {
                    shortest = null;
                    height = h.GetInt32();
                    width = w.GetInt32();
                }
                else
                {
                    throw new InvalidDataException($"'{source}': key 'size' must be an integer or hold 'shortest_edge' or 'height' and 'width'.");
                }
            }
            int cropHeight = defaults.CropHeight, cropWidth = defaults.CropWidth;
            if (root.TryGetProperty("crop_size", out var crop))
            {
                if (crop.ValueKind == JsonValueKind.Number)
                {
                    cropHeight = cropWidth = crop.GetInt32();
                }
                else if (crop.TryGetProperty("height", out var h) && crop.TryGetProperty("width", out var w))
                {
                    cropHeight = h.GetInt32();
                    cropWidth = w.GetInt32();
                }
                else
                {
                    throw new InvalidDataException($"'{source}': key 'crop_size' must be an integer or hold 'height' and 'width'.");
                }
            }
            var processor = new ClipImageProcessor
            {
                DoResize = Bool(root, "do_resize", defaults.DoResize),
                ShortestEdge = shortest,
                ResizeHeight = height,
                ResizeWidth = width,
                Resample = root.TryGetProperty("resample", out var resample) ? resample.GetInt32() : defaults.Resample,
                DoCenterCrop = Bool(root, "do_center_crop", defaults.DoCenterCrop),
                CropHeight = cropHeight,
                CropWidth = cropWidth,
                DoRescale = Bool(root, "do_rescale", defaults.DoRescale),
                RescaleFactor = root.TryGetProperty("rescale_factor", out var factor) ? factor.GetDouble() : defaults.RescaleFactor,
                DoNormalize = Bool(root, "do_normalize", defaults.DoNormalize),
                ImageMean = Floats(root, "image_mean") ?? defaults.ImageMean,
                ImageStd = Floats(root, "image_std") ?? defaults.ImageStd,
                DoConvertRgb = Bool(root, "do_convert_rgb", defaults.DoConvertRgb),
            };
            processor.Validate(source);
            return processor;
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new InvalidDataException($"'{source}' holds a value of the wrong type: {e.Message}", e);
        }
    }

    /// <summary>Resizes and crops an image as the processor does before rescaling (the uint8 stage of CLIPImageProcessor).</summary>
    /// <param name="image">The image.</param>
    /// <returns>A new image.</returns>
    /// <exception cref="InvalidDataException">An option holds a bad value (e.g. an unsupported <see cref="Resample"/>); the message names it.</exception>
    public RgbImage ResizeAndCrop(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        Validate(nameof(ClipImageProcessor));
        var result = image;
        if (DoResize)
        {
            var (h, w) = OutputSize(image.Height, image.Width);
            if (h != image.Height || w != image.Width)
            {
                result = PillowResampler.Resize(image, w, h, Resample);
            }
        }
        if (DoCenterCrop)
        {
            result = CenterCrop(result, CropHeight, CropWidth);
        }
        return result;
    }

    /// <summary>Preprocesses one image into float32 <c>[3, H, W]</c>.</summary>
    /// <param name="image">The image.</param>
    /// <returns>A new tensor owned by the caller.</returns>
    public Tensor Preprocess(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        using var scope = NewDisposeScope();
        var cropped = ResizeAndCrop(image);
        return Normalize(cropped.ToTensor().permute(2, 0, 1).unsqueeze(0)).squeeze(0).MoveToOuterDisposeScope();
    }

    /// <summary>Preprocesses images into a float32 batch <c>[B, 3, H, W]</c>; every output must have the same size.</summary>
    /// <param name="images">The images, at least one.</param>
    /// <returns>A new tensor owned by the caller.</returns>
    /// <exception cref="ArgumentException">The preprocessed images differ in size (no centre crop and no fixed resize).</exception>
    public Tensor Preprocess(IReadOnlyList<RgbImage> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0)
        {
            throw new ArgumentException("At least one image is needed.", nameof(images));
        }
        var cropped = new RgbImage[images.Count];
        for (int i = 0; i < cropped.Length; i++)
        {
            cropped[i] = ResizeAndCrop(images[i] ?? throw new ArgumentException($"Image {i} is null.", nameof(images)));
        }
        return Normalize(Stack(cropped));
    }

    /// <summary>Rescales and normalises uint8 images <c>[B, 3, H, W]</c> into float32 as CLIPImageProcessor does.</summary>
    /// <param name="images">The uint8 images, channels first; not modified.</param>
    /// <returns>A new float32 tensor owned by the caller.</returns>
    public Tensor Normalize(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4 || images.shape[1] != 3)
        {
            throw new ArgumentException($"images must have shape [B, 3, H, W], got [{string.Join(", ", images.shape)}].", nameof(images));
        }
        Validate(nameof(ClipImageProcessor));
        using var scope = NewDisposeScope();
        // transformers rescales in float64 and casts to float32, then normalises in float32.
        var x = images.to_type(ScalarType.Float64);
        x = DoRescale ? x.mul(RescaleFactor).to_type(ScalarType.Float32) : x.to_type(ScalarType.Float32);
        if (DoNormalize)
        {
            var mean = tensor(ImageMean.ToArray(), device: images.device).reshape(1, 3, 1, 1);
            var std = tensor(ImageStd.ToArray(), device: images.device).reshape(1, 3, 1, 1);
            x = x.sub(mean).div(std);
        }
        return x.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Stacks same-size RGB images into one uint8 tensor <c>[B, 3, H, W]</c>.</summary>
    internal static Tensor Stack(IReadOnlyList<RgbImage> images)
    {
        int h = images[0].Height, w = images[0].Width;
        long plane = (long)h * w;
        var data = new byte[images.Count * plane * 3];
        for (int i = 0; i < images.Count; i++)
        {
            var image = images[i];
            if (image.Height != h || image.Width != w)
            {
                throw new ArgumentException($"Image {i} is {image.Width}×{image.Height} after preprocessing, image 0 is {w}×{h}; set a centre crop to batch images of different sizes.", nameof(images));
            }
            long offset = i * plane * 3;
            var pixels = image.Pixels;
            for (long p = 0; p < plane; p++)
            {
                data[offset + p] = pixels[p * 3];
                data[offset + plane + p] = pixels[(p * 3) + 1];
                data[offset + (2 * plane) + p] = pixels[(p * 3) + 2];
            }
        }
        return tensor(data, [images.Count, 3, h, w], ScalarType.Byte, device: CPU);
    }

    private (int Height, int Width) OutputSize(int height, int width)
    {
        if (ShortestEdge is not int size)
        {
            return (ResizeHeight!.Value, ResizeWidth!.Value);
        }
        bool portrait = width <= height;
        int shortSide = portrait ? width : height, longSide = portrait ? height : width;
        if (shortSide == size)
        {
            return (height, width);
        }
        int newLong = (int)((double)((long)size * longSide) / shortSide);
        return portrait ? (newLong, size) : (size, newLong);
    }

    // transformers' center_crop: top = (h - ch) // 2; a crop larger than the image pads it with zeros, centred with
    // ceil((new - old) / 2) before.
    private static RgbImage CenterCrop(RgbImage image, int cropHeight, int cropWidth)
    {
        int h = image.Height, w = image.Width;
        int top = FloorDiv(h - cropHeight, 2), left = FloorDiv(w - cropWidth, 2);
        var source = image.Pixels;
        int padTop = 0, padLeft = 0, newH = h, newW = w;
        if (top < 0 || left < 0)
        {
            newH = Math.Max(cropHeight, h);
            newW = Math.Max(cropWidth, w);
            padTop = (newH - h + 1) / 2;
            padLeft = (newW - w + 1) / 2;
            top += padTop;
            left += padLeft;
        }
        int bottom = Math.Min(newH, top + cropHeight), right = Math.Min(newW, left + cropWidth);
        top = Math.Max(0, top);
        left = Math.Max(0, left);
        int outH = bottom - top, outW = right - left;
        var output = new byte[(long)outH * outW * 3];
        for (int y = 0; y < outH; y++)
        {
            int sy = y + top - padTop;
            if (sy < 0 || sy >= h)
            {
                continue;
            }
            for (int x = 0; x < outW; x++)
            {
                int sx = x + left - padLeft;
                if (sx < 0 || sx >= w)
                {
                    continue;
                }
                long from = (((long)sy * w) + sx) * 3, to = (((long)y * outW) + x) * 3;
                output[to] = source[from];
                output[to + 1] = source[from + 1];
                output[to + 2] = source[from + 2];
            }
        }
        return new RgbImage(outW, outH, output);
    }

    private static int FloorDiv(int a, int b) => (int)Math.Floor((double)a / b);

    private void Validate(string source)
    {
        if (DoResize)
        {
            if (ShortestEdge is int edge)
            {
                if (edge < 1)
                {
                    throw new InvalidDataException($"'{source}': size.shortest_edge must be at least 1, got {edge}.");
                }
            }
            else if (ResizeHeight is not int rh || ResizeWidth is not int rw || rh < 1 || rw < 1)
            {
                throw new InvalidDataException($"'{source}': size needs a positive shortest_edge, or a positive height and width.");
            }
            if (Resample is not (2 or 3))
            {
                throw new InvalidDataException($"'{source}': resample = {Resample} is not supported; use 2 (bilinear) or 3 (bicubic).");
            }
        }
        if (DoCenterCrop && (CropHeight < 1 || CropWidth < 1))
        {
            throw new InvalidDataException($"'{source}': crop_size must be positive, got {CropHeight}×{CropWidth}.");
        }
        if (DoRescale && !double.IsFinite(RescaleFactor))
        {
            throw new InvalidDataException($"'{source}': rescale_factor must be finite, got {RescaleFactor}.");
        }
        if (DoNormalize)
        {
            if (ImageMean.Count != 3 || ImageStd.Count != 3)
            {
                throw new InvalidDataException($"'{source}': image_mean and image_std need 3 values each, got {ImageMean.Count} and {ImageStd.Count}.");
            }
            for (int c = 0; c < 3; c++)
            {
                if (!(ImageStd[c] > 0) || !float.IsFinite(ImageStd[c]) || !float.IsFinite(ImageMean[c]))
                {
                    throw new InvalidDataException($"'{source}': image_std[{c}] must be positive and finite and image_mean[{c}] finite, got {ImageStd[c]} and {ImageMean[c]}.");
                }
            }
        }
    }

    private static bool Bool(JsonElement root, string key, bool fallback) =>
        root.TryGetProperty(key, out var value) ? value.GetBoolean() : fallback;

    private static float[]? Floats(JsonElement root, string key)
    {
        if (!root.TryGetProperty(key, out var value))
        {
            return null;
        }
        if (value.ValueKind == JsonValueKind.Number)
        {
            float single = value.GetSingle();
            return [single, single, single];
        }
        return value.EnumerateArray().Select(e => e.GetSingle()).ToArray();
    }
}
