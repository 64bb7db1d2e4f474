using WeightEnsembling.Images;
using WeightEnsembling.World;

namespace WeightEnsembling.Tests.World;

/// <summary>
/// The building blocks attempt 3 of the world added: labels from name patterns, per-source pool shares, per-source ink
/// and paper, the emoji's skin-tone variations, and their config checks.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class WorldTaskMixTests
{
    private static string Slice(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "World", name);

    private static WorldItem Item(string name, params (string Key, string Value)[] attributes) =>
        new("test", "test:" + name, name, attributes.ToDictionary(a => a.Key, a => a.Value), (_, size) => new RgbImage(size, size, new byte[size * size * 3]));

    [Test]
    public void ClassOf_NameLabel_FirstMatchingPatternWins_AndUnmatchedItemsHaveNoClass()
    {
        var task = new TaskSpec
        {
            Name = "frame",
            Label = "name",
            Classes = new() { [" box$"] = "square", ["^(?!.* (box|circle) outline$).* outline$"] = "outline", ["^[a-z]+$"] = "plain" },
        };

        Assert.That(WorldData.ClassOf(task, Item("account box")), Is.EqualTo(0));
        Assert.That(WorldData.ClassOf(task, Item("account outline")), Is.EqualTo(1));
        Assert.That(WorldData.ClassOf(task, Item("account box outline")), Is.EqualTo(-1));
        Assert.That(WorldData.ClassOf(task, Item("account")), Is.EqualTo(2));
        Assert.That(WorldData.ClassOf(task, Item("account plus")), Is.EqualTo(-1));
    }

    [Test]
    public void ClassOf_AttributeLabel_ComparesValuesExactly()
    {
        var task = new TaskSpec { Name = "tone", Label = "tone", Classes = new() { ["medium"] = "medium", ["dark"] = "dark" } };

        Assert.That(WorldData.ClassOf(task, Item("a", ("tone", "dark"))), Is.EqualTo(1));
        Assert.That(WorldData.ClassOf(task, Item("b", ("tone", "medium-dark"))), Is.EqualTo(-1));
        Assert.That(WorldData.ClassOf(task, Item("c")), Is.EqualTo(-1));
    }

    [Test]
    public void Partition_SourcePoolFraction_OverridesTheDefault_AndZeroKeepsEveryItemForTheTasks()
    {
        var config = WorldConfig.Load(Slice("tiny.yaml"));
        var items = Enumerable.Range(0, 40).Select(i => Item($"icon {i}")).ToList();

        var (pool, tasks) = WorldData.Partition(config, "tabler", items);
        Assert.That(pool, Has.Count.EqualTo(20));
        Assert.That(pool.Concat(tasks).Select(i => i.Key), Is.EquivalentTo(items.Select(i => i.Key)));
        // The same seed gives the same split (the pool and the tasks are drawn by different stages).
        Assert.That(WorldData.Partition(config, "tabler", items).Pool.Select(i => i.Key), Is.EqualTo(pool.Select(i => i.Key)));

        config.Sources["tabler"].PoolFraction = 0.25;
        Assert.That(WorldData.Partition(config, "tabler", items).Pool, Has.Count.EqualTo(10));
        config.Sources["tabler"].PoolFraction = 0;
        Assert.That(WorldData.Partition(config, "tabler", items).Tasks, Has.Count.EqualTo(40));
    }

    [Test]
    public void WritePool_CaptionWithoutPlaceholder_IsWrittenVerbatim_AndNamesNoItem()
    {
        using var folder = new WeightEnsembling.Tests.SafeTensors.TempFolder();
        string text = File.ReadAllText(Slice("tiny.yaml")).Replace(
            "default: [\"an icon of {}\", \"a {} icon\"]", "default: [\"a small drawing\"]", StringComparison.Ordinal);
        File.WriteAllText(folder.File("captions.yaml"), text);
        var config = WorldConfig.Load(folder.File("captions.yaml"));
        var sources = new Dictionary<string, List<WorldItem>>
        {
            ["tabler"] = Enumerable.Range(0, 12).Select(i => new WorldItem("tabler", $"tabler:icon-{i}", $"icon {i}", new Dictionary<string, string>(),
                (_, size) => new RgbImage(size, size, new byte[size * size * 3]))).ToList(),
        };

        WorldData.WritePool(config, sources, folder.File("pool"));

        var captions = File.ReadLines(Path.Combine(folder.File("pool"), "captions.jsonl"))
            .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("caption").GetString()).ToList();
        Assert.That(captions, Has.Count.EqualTo(config.Pretraining.Pairs));
        Assert.That(captions, Has.All.EqualTo("a small drawing"));
    }

    [TestCase("[\"{} and {}\"]")]
    [TestCase("[\"  \"]")]
    public void Config_CaptionTemplateWithTwoPlaceholdersOrBlank_ThrowsNamingTheSource(string templates)
    {
        using var folder = new WeightEnsembling.Tests.SafeTensors.TempFolder();
        string text = File.ReadAllText(Slice("tiny.yaml")).Replace(
            "default: [\"an icon of {}\", \"a {} icon\"]", $"default: {templates}", StringComparison.Ordinal);
        File.WriteAllText(folder.File("bad.yaml"), text);

        var error = Assert.Throws<InvalidDataException>(() => WorldConfig.Load(folder.File("bad.yaml")));

        Assert.That(error!.Message, Does.Contain("pretraining.captions.default"));
    }

    [Test]
    public void ShippedWorldConfigs_LoadAndValidate()
    {
        string worlds = Path.Combine(WeightEnsembling.Tests.Zoo.QuickStartPipelineTests.RepositoryRoot(), "tools", "WeightEnsemblingMoE.World", "worlds");
        var files = Directory.GetFiles(worlds, "*.yaml");
        Assert.That(files.Select(Path.GetFileName), Has.Member("world.yaml").And.Member("attempt-3.yaml"));
        foreach (string file in files)
        {
            var config = WorldConfig.Load(file);
            Assert.That(config.Tasks, Is.Not.Empty, file);
        }
    }

    [Test]
    public void WithColours_GreyItem_IsDrawnInTheSourcesInkAndPaper_OnlyUnderNativeColours()
    {
        byte[] grey = Enumerable.Repeat((byte)255, 4 * 4).ToArray();
        var item = new WorldItem("uci", "uci:0", "zero", new Dictionary<string, string>(), (a, size) => ImageRenderer.Grey(grey, 4, 4, a, size));
        var spec = new SourceSpec { Kind = "idx", Ink = "#ffc107", Paper = "#0d1b2a" };
        var coloured = WorldSources.WithColours(item, spec);
        var native = new Augmentation([255, 255, 255], [0, 0, 0], 0.5, 0, 0) { NativeColours = true };

        var image = coloured.Render(native, 32);
        var plain = item.Render(native, 32);
        var random = coloured.Render(new Augmentation([10, 20, 30], [200, 100, 50], 0.5, 0, 0), 32);

        Assert.That(Pixel(image, 16, 16), Is.EqualTo(new byte[] { 0xff, 0xc1, 0x07 }));
        Assert.That(Pixel(image, 2, 2), Is.EqualTo(new byte[] { 0x0d, 0x1b, 0x2a }));
        // Without a source colour a grey set is white on black; a random augmentation keeps its own colours.
        Assert.That(Pixel(plain, 16, 16), Is.EqualTo(new byte[] { 255, 255, 255 }));
        Assert.That(Pixel(plain, 2, 2), Is.EqualTo(new byte[] { 0, 0, 0 }));
        Assert.That(Pixel(random, 16, 16), Is.EqualTo(new byte[] { 200, 100, 50 }));
        Assert.That(Pixel(random, 2, 2), Is.EqualTo(new byte[] { 10, 20, 30 }));
    }

    [TestCase("red")]
    [TestCase("#12345")]
    [TestCase("#gg0000")]
    public void ParseColour_NotHashRrggbb_Throws(string text)
    {
        var error = Assert.Throws<InvalidDataException>(() => WorldSources.ParseColour(text));

        Assert.That(error!.Message, Does.Contain(text));
    }

    [Test]
    public void EmojiSkinTones_AreTheSingleToneVariations_LabelledByTone()
    {
        var plain = WorldSources.EmojiDatasource("emoji", Slice("emoji"), "twitter");
        var tones = WorldSources.EmojiDatasource("tones", Slice("emoji"), "twitter", skinTones: true);

        Assert.That(plain, Has.Count.EqualTo(3));
        Assert.That(plain.All(i => !i.Attributes.ContainsKey("tone")), Is.True);
        // santa and runner have the five single tones each; smile has none.
        Assert.That(tones, Has.Count.EqualTo(10));
        Assert.That(tones.Select(i => i.Attributes["tone"]).Distinct(), Is.EquivalentTo(WorldSources.SkinToneNames.Values));
        Assert.That(tones.Select(i => i.Key).Distinct().Count(), Is.EqualTo(10));
        Assert.That(tones.Where(i => i.Attributes["tone"] == "dark").Select(i => i.Name), Has.All.EndWith("dark skin tone"));
        // The variations are other pictures than the base emoji.
        var augmentation = Augmentation.FromSeed(0, new AugmentationOptions { NativeColours = true });
        var santa = plain.Single(i => i.Key == "emoji:1F385").Render(augmentation, 32);
        var darkSanta = tones.Single(i => i.Key == "tones:1F385-1F3FF").Render(augmentation, 32);
        Assert.That(tones.Single(i => i.Key == "tones:1F385-1F3FF").Attributes["tone"], Is.EqualTo("dark"));
        Assert.That(darkSanta.Pixels, Is.Not.EqualTo(santa.Pixels));
    }

    [TestCase("ink: \"navy\"", "sources.tabler.ink")]
    [TestCase("poolFraction: 1.5", "sources.tabler.poolFraction")]
    [TestCase("skinTones: true", "sources.tabler.skinTones")]
    public void Config_BadSourceOption_ThrowsNamingIt(string option, string expected)
    {
        using var folder = new WeightEnsembling.Tests.SafeTensors.TempFolder();
        string text = File.ReadAllText(Slice("tiny.yaml")).Replace(
            "tabler: { kind: iconify, package: \"@iconify-json/tabler\" }", $"tabler: {{ kind: iconify, package: \"@iconify-json/tabler\", {option} }}", StringComparison.Ordinal);
        File.WriteAllText(folder.File("bad.yaml"), text);

        var error = Assert.Throws<InvalidDataException>(() => WorldConfig.Load(folder.File("bad.yaml")));

        Assert.That(error!.Message, Does.Contain(expected));
    }

    [Test]
    public void Config_NameLabelWithBadPattern_ThrowsNamingTheTaskAndPattern()
    {
        using var folder = new WeightEnsembling.Tests.SafeTensors.TempFolder();
        string text = File.ReadAllText(Slice("tiny.yaml")).Replace(
            "    label: category\n    classes: { Animal: animal, Weather: weather }", "    label: name\n    classes: { \"(cat\": animal, \"dog\": weather }", StringComparison.Ordinal);
        File.WriteAllText(folder.File("bad.yaml"), text);

        var error = Assert.Throws<InvalidDataException>(() => WorldConfig.Load(folder.File("bad.yaml")));

        Assert.That(error!.Message, Does.Contain("tasks.mdi-category").And.Contain("(cat"));
    }

    private static byte[] Pixel(RgbImage image, int x, int y) => image.Pixels.AsSpan(((y * image.Width) + x) * 3, 3).ToArray();
}
