using WeightEnsembling.Text;

namespace WeightEnsembling.Tests.Text;

public sealed class ClipTaskPromptsTests
{
    [TestCase("sun397", 397)]
    [TestCase("stanford-cars", 196)]
    [TestCase("resisc45", 45)]
    [TestCase("eurosat", 10)]
    [TestCase("svhn", 10)]
    [TestCase("gtsrb", 43)]
    [TestCase("mnist", 10)]
    [TestCase("dtd", 47)]
    [TestCase("cifar10", 10)]
    [TestCase("cifar100", 100)]
    [TestCase("oxford_flowers102", 102)]
    [TestCase("food101", 101)]
    [TestCase("fashion_mnist", 10)]
    [TestCase("kmnist", 10)]
    [TestCase("emnist_letters", 26)]
    [TestCase("oxford-iiit-pet", 37)]
    [TestCase("stl10", 10)]
    [TestCase("imagenet", 1000)]
    public void Get_Task_HasItsClassCount(string task, int classes)
    {
        var set = ClipTaskPrompts.Get(task);
        Assert.That(set.ClassNames, Has.Count.EqualTo(classes));
        Assert.That(set.Templates, Is.Not.Empty);
        Assert.That(set.License, Is.EqualTo("MIT"));
        Assert.That(set.Source, Does.StartWith("tanganke/fusion_bench:fusion_bench/tasks/clip_classification/").And.EndWith(".py"));
        Assert.That(set.Commit, Does.Match("^[0-9a-f]{40}$"));
    }

    [Test]
    public void EveryTask_HasNoDuplicateNamesOrTemplates_AndOnePlaceholderPerTemplate()
    {
        Assert.That(ClipTaskPrompts.Names, Has.Count.GreaterThanOrEqualTo(8));
        foreach (var name in ClipTaskPrompts.Names)
        {
            var set = ClipTaskPrompts.Get(name);
            Assert.That(set.Task, Is.EqualTo(name));
            Assert.That(set.ClassNames, Is.Unique, name);
            Assert.That(set.ClassNames, Has.None.Empty, name);
            Assert.That(set.Templates, Is.Unique, name);
            foreach (var template in set.Templates)
            {
                var first = template.IndexOf("{}", StringComparison.Ordinal);
                Assert.That(first, Is.GreaterThanOrEqualTo(0), $"{name}: {template}");
                Assert.That(template.IndexOf("{}", first + 2, StringComparison.Ordinal), Is.EqualTo(-1), $"{name}: {template}");
            }
        }
    }

    [Test]
    public void Names_AreSortedAndIncludeTheEightTaskSuite()
    {
        var names = ClipTaskPrompts.Names;
        Assert.That(names, Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal));
        Assert.That(names, Is.SupersetOf(new[] { "sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd" }));
    }

    [Test]
    public void Get_IgnoresCaseAndDashUnderscore()
    {
        Assert.That(ClipTaskPrompts.Get("Stanford_Cars"), Is.SameAs(ClipTaskPrompts.Get("stanford-cars")));
        Assert.That(ClipTaskPrompts.Get("SUN397").Task, Is.EqualTo("sun397"));
    }

    [Test]
    public void Get_UnknownTask_ListsTheAvailableNames()
    {
        var ex = Assert.Throws<KeyNotFoundException>(() => ClipTaskPrompts.Get("no-such-task"));
        Assert.That(ex!.Message, Does.Contain("no-such-task").And.Contain("sun397").And.Contain("stanford-cars").And.Contain("dtd"));
    }

    [Test]
    public void Format_FillsThePlaceholder()
    {
        Assert.That(ClipTaskPrompts.Format("a photo of a {}.", "cat"), Is.EqualTo("a photo of a cat."));
        var mnist = ClipTaskPrompts.Get("mnist");
        Assert.That(mnist.PromptsFor(mnist.ClassNames[7]), Is.EqualTo(new[] { "a photo of the number: \"7\"." }));
        var eurosat = ClipTaskPrompts.Get("eurosat");
        Assert.That(eurosat.ClassNames[0], Is.EqualTo("annual crop land"));
        Assert.That(eurosat.PromptsFor("forest"), Is.EqualTo(new[]
        {
            "a centered satellite photo of forest.", "a centered satellite photo of a forest.", "a centered satellite photo of the forest.",
        }));
    }

    [Test]
    public void Format_TemplateWithoutOrWithTwoPlaceholders_Throws()
    {
        Assert.Throws<ArgumentException>(() => ClipTaskPrompts.Format("a photo.", "cat"));
        Assert.Throws<ArgumentException>(() => ClipTaskPrompts.Format("{} and {}", "cat"));
    }

    [Test]
    public void ImageNet_ShipsEightyDistinctPrompts()
    {
        var imagenet = ClipTaskPrompts.Get("imagenet");
        Assert.That(imagenet.Templates, Has.Count.EqualTo(80));
        Assert.That(imagenet.Templates, Does.Contain("a bad photo of a {}."));
        Assert.That(imagenet.Templates[^1], Is.EqualTo("a tattoo of the {}."));
    }
}
