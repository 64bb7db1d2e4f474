using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using SkiaSharp;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.World;

/// <summary>Reads the items of each source kind from the packages' own files and metadata.</summary>
public static class WorldSources
{
    /// <summary>Loads a source's items; <paramref name="packageFolder"/> gives an npm package's unpacked folder by name.</summary>
    public static List<WorldItem> Load(string name, SourceSpec spec, WorldConfig config, Func<string, string> packageFolder)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(packageFolder);
        var items = spec.Kind switch
        {
            "iconify" => Iconify(name, packageFolder(spec.Package!)),
            "emoji-datasource" => EmojiDatasource(name, packageFolder(spec.Package!), spec.Set ?? "twitter", spec.SkinTones),
            "flag-icons" => FlagIcons(name, packageFolder(spec.Package!)),
            "fonts" => Fonts(name, spec.Families, spec.Characters),
            "idx" => Idx(name, spec, config),
            _ => throw new InvalidDataException($"sources.{name}: unknown kind '{spec.Kind}'."),
        };
        if (items.Count == 0)
        {
            throw new InvalidDataException($"sources.{name} ({spec.Kind}) has no items.");
        }

        return spec.Ink is null && spec.Paper is null ? items : items.Select(i => WithColours(i, spec)).ToList();
    }

    /// <summary>
    /// The item drawn in its source's ink and paper when the augmentation asks for native colours (other
    /// augmentations keep their random colours).
    /// </summary>
    public static WorldItem WithColours(WorldItem item, SourceSpec spec)
    {
        ArgumentNullException.ThrowIfNull(item);
        ArgumentNullException.ThrowIfNull(spec);
        byte[]? ink = spec.Ink is null ? null : ParseColour(spec.Ink);
        byte[]? paper = spec.Paper is null ? null : ParseColour(spec.Paper);
        return new WorldItem(item.Source, item.Key, item.Name, item.Attributes, (a, size) => item.Render(
            a.NativeColours ? a with { Foreground = ink ?? a.Foreground, Background = paper ?? a.Background, SourceColours = true } : a, size));
    }

    /// <summary>Parses <c>#rrggbb</c> into red, green and blue bytes.</summary>
    public static byte[] ParseColour(string hex)
    {
        ArgumentNullException.ThrowIfNull(hex);
        if (hex.Length != 7 || hex[0] != '#' || !int.TryParse(hex.AsSpan(1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int rgb))
        {
            throw new InvalidDataException($"'{hex}' is not a colour of the form #rrggbb.");
        }

        return [(byte)(rgb >> 16), (byte)(rgb >> 8), (byte)rgb];
    }

    /// <summary>An Iconify JSON set: <c>icons.json</c> (each icon's SVG body) and <c>metadata.json</c> (categories, when the set has them).</summary>
    public static List<WorldItem> Iconify(string name, string folder)
    {
        string path = Path.Combine(folder, "icons.json");
        using var json = JsonDocument.Parse(File.ReadAllText(path));
        var root = json.RootElement;
        string prefix = root.GetProperty("prefix").GetString() ?? throw new InvalidDataException($"'{path}' has no prefix.");
        double width = root.TryGetProperty("width", out var w) ? w.GetDouble() : 16;
        double height = root.TryGetProperty("height", out var h) ? h.GetDouble() : 16;
        var categories = new Dictionary<string, string>();
        string metadata = Path.Combine(folder, "metadata.json");
        if (File.Exists(metadata))
        {
            using var meta = JsonDocument.Parse(File.ReadAllText(metadata));
            if (meta.RootElement.TryGetProperty("categories", out var cats))
            {
                foreach (var cat in cats.EnumerateObject())
                {
                    foreach (var icon in cat.Value.EnumerateArray())
                    {
                        categories.TryAdd(icon.GetString()!, cat.Name);
                    }
                }
            }
        }

        var items = new List<WorldItem>();
        foreach (var icon in root.GetProperty("icons").EnumerateObject().OrderBy(i => i.Name, StringComparer.Ordinal))
        {
            if (icon.Value.TryGetProperty("hidden", out var hidden) && hidden.GetBoolean())
            {
                continue;
            }

            string body = icon.Value.GetProperty("body").GetString()!;
            double iw = icon.Value.TryGetProperty("width", out var x) ? x.GetDouble() : width;
            double ih = icon.Value.TryGetProperty("height", out var y) ? y.GetDouble() : height;
            double left = icon.Value.TryGetProperty("left", out var l) ? l.GetDouble() : 0;
            double top = icon.Value.TryGetProperty("top", out var t) ? t.GetDouble() : 0;
            string svg = string.Create(CultureInfo.InvariantCulture,
                $"<svg xmlns=\"http://www.w3.org/2000/svg\" xmlns:xlink=\"http://www.w3.org/1999/xlink\" viewBox=\"{left} {top} {iw} {ih}\" width=\"{iw}\" height=\"{ih}\">{body}</svg>");
            var attributes = new Dictionary<string, string> { ["set"] = prefix };
            if (categories.TryGetValue(icon.Name, out string? category))
            {
                attributes["category"] = category;
            }

            string key = $"{name}:{icon.Name}";
            items.Add(new WorldItem(name, key, icon.Name.Replace('-', ' '), attributes, (a, size) => ImageRenderer.Svg(svg, a, size, key)));
        }

        return items;
    }

    /// <summary>emoji-datasource: <c>emoji.json</c> (name, category, subcategory) and the set's 64 px PNGs; with <paramref name="skinTones"/>, the single-skin-tone variations instead (attribute <c>tone</c>).</summary>
    public static List<WorldItem> EmojiDatasource(string name, string folder, string set, bool skinTones = false)
    {
        string path = Path.Combine(folder, "emoji.json");
        using var json = JsonDocument.Parse(File.ReadAllText(path));
        var items = new List<WorldItem>();
        foreach (var emoji in json.RootElement.EnumerateArray())
        {
            string words = (emoji.GetProperty("name").GetString() ?? emoji.GetProperty("short_name").GetString()!).ToLowerInvariant();
            string category = emoji.GetProperty("category").GetString()!;
            string subcategory = emoji.GetProperty("subcategory").GetString()!;
            if (!skinTones)
            {
                AddEmoji(emoji, emoji.GetProperty("unified").GetString()!, words, new Dictionary<string, string> { ["category"] = category, ["subcategory"] = subcategory });
                continue;
            }

            if (!emoji.TryGetProperty("skin_variations", out var variations))
            {
                continue;
            }

            foreach (var variation in variations.EnumerateObject())
            {
                // Single-tone variations only (keys like 1F3FD; two-person emoji also have 1F3FB-1F3FC).
                if (!SkinToneNames.TryGetValue(variation.Name, out string? tone))
                {
                    continue;
                }

                AddEmoji(variation.Value, variation.Value.GetProperty("unified").GetString()!, $"{words} {tone} skin tone",
                    new Dictionary<string, string> { ["category"] = category, ["subcategory"] = subcategory, ["tone"] = tone });
            }
        }

        return items;

        void AddEmoji(JsonElement entry, string unified, string words, Dictionary<string, string> attributes)
        {
            if (!entry.TryGetProperty($"has_img_{set}", out var has) || !has.GetBoolean())
            {
                return;
            }

            string image = Path.Combine(folder, "img", set, "64", entry.GetProperty("image").GetString()!);
            if (!File.Exists(image))
            {
                return;
            }

            items.Add(new WorldItem(name, $"{name}:{unified}", words, attributes, (a, size) =>
            {
                using var bitmap = SKBitmap.Decode(image) ?? throw new InvalidDataException($"'{image}' is not a decodable image.");
                return ImageRenderer.Bitmap(bitmap, a, size);
            }));
        }
    }

    /// <summary>The Unicode skin-tone modifiers (Fitzpatrick types 1-2 to 6) by the code emoji-datasource keys them with.</summary>
    public static readonly IReadOnlyDictionary<string, string> SkinToneNames = new Dictionary<string, string>
    {
        ["1F3FB"] = "light",
        ["1F3FC"] = "medium-light",
        ["1F3FD"] = "medium",
        ["1F3FE"] = "medium-dark",
        ["1F3FF"] = "dark",
    };

    public static List<WorldItem> FlagIcons(string name, string folder)
    {
        string path = Path.Combine(folder, "country.json");
        using var json = JsonDocument.Parse(File.ReadAllText(path));
        var items = new List<WorldItem>();
        foreach (var country in json.RootElement.EnumerateArray())
        {
            string file = Path.Combine(folder, country.GetProperty("flag_4x3").GetString()!);
            if (!country.TryGetProperty("continent", out var continent) || continent.ValueKind != JsonValueKind.String || !File.Exists(file))
            {
                continue;
            }

            string code = country.GetProperty("code").GetString()!;
            var attributes = new Dictionary<string, string> { ["continent"] = continent.GetString()!, ["code"] = code };
            items.Add(new WorldItem(name, $"{name}:{code}", $"flag of {country.GetProperty("name").GetString()}", attributes,
                (a, size) => ImageRenderer.Svg(File.ReadAllText(file), a, size, file)));
        }

        return items;
    }

    /// <summary>Glyphs of the installed fonts (fc-list) of the given families: one item per font file and character.</summary>
    public static List<WorldItem> Fonts(string name, IReadOnlyList<string> families, string characters)
    {
        var items = new List<WorldItem>();
        foreach (var (file, family, style) in ListFonts().Where(f => families.Contains(f.Family)).OrderBy(f => f.File, StringComparer.Ordinal))
        {
            var typeface = SKTypeface.FromFile(file) ?? throw new InvalidDataException($"SkiaSharp cannot load the font '{file}'.");
            foreach (var rune in characters.EnumerateRunes().Distinct())
            {
                string text = rune.ToString();
                string kind = Rune.IsDigit(rune) ? "digit" : Rune.IsUpper(rune) ? "uppercase letter" : Rune.IsLower(rune) ? "lowercase letter" : Rune.IsPunctuation(rune) ? "punctuation" : "symbol";
                var attributes = new Dictionary<string, string>
                {
                    ["character"] = text,
                    ["class"] = kind,
                    ["family"] = family,
                    ["style"] = style,
                };
                string words = kind switch
                {
                    "digit" => $"the digit {text}",
                    "uppercase letter" => $"the capital letter {text}",
                    "lowercase letter" => $"the small letter {text}",
                    _ => $"the sign {text}",
                };
                items.Add(new WorldItem(name, $"{name}:{Path.GetFileName(file)}:{rune.Value:X4}", $"{words} in {family} {style}".ToLowerInvariant(), attributes,
                    (a, size) => ImageRenderer.Glyph(typeface, text, a, size)));
            }
        }

        return items;
    }

    /// <summary>The installed fonts as fc-list reports them (file, first family name, first style name).</summary>
    public static List<(string File, string Family, string Style)> ListFonts()
    {
        var start = new ProcessStartInfo("fc-list") { RedirectStandardOutput = true };
        start.ArgumentList.Add("--format");
        start.ArgumentList.Add("%{file}\t%{family[0]}\t%{style[0]}\n");
        using var process = Process.Start(start) ?? throw new InvalidOperationException("Could not start fc-list (Debian package fontconfig).");
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split('\t'))
            .Where(f => f.Length == 3)
            .Select(f => (f[0], f[1], f[2]))
            .ToList();
    }

    /// <summary>Grey images in IDX files (e.g. the QuickStart's Fashion-MNIST and digit splits), labelled by class name.</summary>
    public static List<WorldItem> Idx(string name, SourceSpec spec, WorldConfig config)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(config);
        var items = new List<WorldItem>();
        for (int f = 0; f < spec.Images.Count; f++)
        {
            string imagesPath = config.Resolve(spec.Images[f]);
            string labelsPath = config.Resolve(spec.Labels[f]);
            using var images = IdxReader.Read(imagesPath);
            using var labels = IdxReader.Read(labelsPath);
            if (images.dim() != 3 || labels.shape[0] != images.shape[0])
            {
                throw new InvalidDataException($"'{imagesPath}' must hold [N, H, W] images matching the N labels of '{labelsPath}'.");
            }

            int n = (int)images.shape[0], height = (int)images.shape[1], width = (int)images.shape[2];
            byte[] all = images.to(TorchSharp.torch.ScalarType.Byte).data<byte>().ToArray();
            long[] labelValues = labels.to(TorchSharp.torch.ScalarType.Int64).data<long>().ToArray();
            for (int i = 0; i < n; i++)
            {
                int label = (int)labelValues[i];
                if (label < 0 || label >= spec.ClassNames.Count)
                {
                    throw new InvalidDataException($"'{labelsPath}' holds label {label}; sources.{name}.classNames has {spec.ClassNames.Count} names.");
                }

                byte[] grey = all.AsSpan(i * width * height, width * height).ToArray();
                string className = spec.ClassNames[label];
                items.Add(new WorldItem(name, $"{name}:{Path.GetFileName(imagesPath)}:{i}", className,
                    new Dictionary<string, string> { ["label"] = className },
                    (a, size) => ImageRenderer.Grey(grey, width, height, a, size)));
            }
        }

        return items;
    }
}
