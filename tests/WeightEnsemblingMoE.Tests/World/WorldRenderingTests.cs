using WeightEnsembling.Images;
using WeightEnsembling.World;

namespace WeightEnsembling.Tests.World;

[TestFixture, NonParallelizable]
public sealed class WorldRenderingTests
{
    private static string Slice(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "World", name);

    private static readonly AugmentationOptions Options = new();

    [Test]
    public void RenderIcon_SameSeed_GivesTheSamePixels_OtherSeed_Differs()
    {
        var icon = WorldSources.Iconify("tabler", Slice("tabler"))[5];

        var first = icon.Render(Augmentation.FromSeed(11, Options), 32);
        var again = icon.Render(Augmentation.FromSeed(11, Options), 32);
        var other = icon.Render(Augmentation.FromSeed(12, Options), 32);

        Assert.That(again.Pixels, Is.EqualTo(first.Pixels));
        Assert.That(other.Pixels, Is.Not.EqualTo(first.Pixels));
    }

    [Test]
    public void RenderSvg_FilledSquare_IsForegroundInsideTheBoxAndBackgroundOutside()
    {
        // A square in currentColor filling its viewBox, drawn at scale 0.5, centred: pixels 8..23 of 32 are foreground.
        var augmentation = new Augmentation([10, 20, 30], [200, 100, 50], 0.5, 0, 0);
        var image = ImageRenderer.Svg("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 10 10\"><rect width=\"10\" height=\"10\" fill=\"currentColor\"/></svg>", augmentation, 32, "square");

        Assert.That(Pixel(image, 16, 16), Is.EqualTo(new byte[] { 200, 100, 50 }));
        Assert.That(Pixel(image, 8, 8), Is.EqualTo(new byte[] { 200, 100, 50 }));
        Assert.That(Pixel(image, 23, 23), Is.EqualTo(new byte[] { 200, 100, 50 }));
        Assert.That(Pixel(image, 7, 16), Is.EqualTo(new byte[] { 10, 20, 30 }));
        Assert.That(Pixel(image, 16, 24), Is.EqualTo(new byte[] { 10, 20, 30 }));
    }

    [Test]
    public void RenderSvg_Malformed_ThrowsNamingTheSource()
    {
        var augmentation = Augmentation.FromSeed(0, Options);

        var error = Assert.Throws<InvalidDataException>(() => ImageRenderer.Svg("<svg", augmentation, 16, "broken-icon"));

        Assert.That(error!.Message, Does.Contain("broken-icon"));
    }

    [Test]
    public void Augmentation_KeepsForegroundContrastAndScaleRange()
    {
        for (int seed = 0; seed < 200; seed++)
        {
            var a = Augmentation.FromSeed(seed, Options);
            double Luma(byte[] c) => (0.299 * c[0]) + (0.587 * c[1]) + (0.114 * c[2]);
            Assert.That(Math.Abs(Luma(a.Foreground) - Luma(a.Background)), Is.GreaterThanOrEqualTo(Options.MinLumaContrast * 255));
            Assert.That(a.Scale, Is.InRange(Options.MinScale, Options.MaxScale));
        }
    }

    [Test]
    public void Iconify_ReadsCategoriesFromMetadata()
    {
        var items = WorldSources.Iconify("mdi", Slice("mdi"));

        Assert.That(items, Has.Count.EqualTo(40));
        Assert.That(items.Count(i => i.Attributes["category"] == "Animal"), Is.EqualTo(20));
        Assert.That(items.All(i => i.Attributes["set"] == "mdi"), Is.True);
        Assert.That(items[0].Key, Does.StartWith("mdi:"));
        Assert.That(items[0].Name, Does.Not.Contain("-"));
    }

    [Test]
    public void Disjointness_PoolImageAlsoInATask_ThrowsNamingBoth()
    {
        var icon = WorldSources.Iconify("tabler", Slice("tabler"))[0];
        var image = icon.Render(Augmentation.FromSeed(1, Options), 16);
        var other = icon.Render(Augmentation.FromSeed(2, Options), 16);
        var pool = new Dictionary<string, string> { [Disjointness.Hash(image)] = "pretrain/images/000007.png" };
        var tasks = new Dictionary<string, IReadOnlyDictionary<string, string>>
        {
            ["style/train"] = new Dictionary<string, string> { [Disjointness.Hash(other)] = "tasks/style/train/00-a/00000.png" },
            ["style/test"] = new Dictionary<string, string> { [Disjointness.Hash(image)] = "tasks/style/test/00-a/00003.png" },
        };

        var error = Assert.Throws<InvalidDataException>(() => Disjointness.Check(pool, tasks));

        Assert.That(error!.Message, Does.Contain("style/test").And.Contain("000007.png").And.Contain("00003.png"));
        tasks.Remove("style/test");
        Assert.DoesNotThrow(() => Disjointness.Check(pool, tasks));
    }

    [Test]
    public void NpmIntegrity_WrongDigest_ThrowsNamingPackage()
    {
        using var folder = new WeightEnsembling.Tests.SafeTensors.TempFolder();
        File.WriteAllText(folder.File("p.tgz"), "not the package");
        var package = new NpmPackage { Name = "@iconify-json/tabler", Version = "1.2.41", Integrity = "sha512-AAAA" };

        var error = Assert.Throws<InvalidDataException>(() => NpmPackageCache.CheckIntegrity(folder.File("p.tgz"), package));

        Assert.That(error!.Message, Does.Contain("@iconify-json/tabler@1.2.41"));
        package.Integrity = "sha512-" + Convert.ToBase64String(System.Security.Cryptography.SHA512.HashData(File.ReadAllBytes(folder.File("p.tgz"))));
        Assert.DoesNotThrow(() => NpmPackageCache.CheckIntegrity(folder.File("p.tgz"), package));
    }

    [Test]
    public void Config_TemplateWithoutPlaceholder_ThrowsNamingFileAndTemplate()
    {
        using var folder = new WeightEnsembling.Tests.SafeTensors.TempFolder();
        string text = File.ReadAllText(Slice("tiny.yaml")).Replace("\"an icon in {} style\"", "\"an icon in style\"", StringComparison.Ordinal);
        File.WriteAllText(folder.File("bad.yaml"), text);

        var error = Assert.Throws<InvalidDataException>(() => WorldConfig.Load(folder.File("bad.yaml")));

        Assert.That(error!.Message, Does.Contain("bad.yaml").And.Contain("an icon in style"));
    }

    [Test]
    public void SymmetricInfoNce_MatchesPyTorchReference()
    {
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Slice("infonce.json")));
        double[][] Read(string name) => json.RootElement.GetProperty(name).EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetDouble()).ToArray()).ToArray();
        using var image = TorchSharp.torch.tensor(Read("image").SelectMany(r => r).ToArray(), [6, 4]);
        using var text = TorchSharp.torch.tensor(Read("text").SelectMany(r => r).ToArray(), [6, 4]);
        using var scale = TorchSharp.torch.tensor(json.RootElement.GetProperty("logit_scale").GetDouble());

        using var loss = WorldTraining.SymmetricInfoNce(image, text, scale);

        Assert.That(loss.item<double>(), Is.EqualTo(json.RootElement.GetProperty("loss").GetDouble()).Within(1e-12));
    }

    private static byte[] Pixel(RgbImage image, int x, int y) => image.Pixels.AsSpan(((y * image.Width) + x) * 3, 3).ToArray();

    [Test]
    public void Jitter_ZeroIsTheIdentity_AndAShiftMovesTheContent()
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        var images = TorchSharp.torch.zeros(1, 1, 8, 8);
        images[0, 0, 4, 4] = TorchSharp.torch.tensor(1f);
        using var generator = new TorchSharp.torch.Generator(3);

        var same = WorldTraining.Jitter(images, 0, generator);
        var moved = Enumerable.Range(0, 8).Select(_ => WorldTraining.Jitter(images, 0.25, generator)).ToList();

        Assert.That((same - images).abs().max().item<float>(), Is.LessThan(1e-6f));
        Assert.That(moved.Any(m => m.argmax().item<long>() != images.argmax().item<long>()), Is.True, "some draws move the bright pixel");
        Assert.That(moved.All(m => m.shape.SequenceEqual(images.shape)), Is.True);
    }
}
