using WeightEnsembling.Zoo;

namespace WeightEnsembling.Tests.Zoo;

/// <summary>The <c>figures</c> command's options: what a user types selects what is drawn, and typos are named.</summary>
[TestFixture]
public sealed class FigureSettingsTests
{
    [Test]
    public void Parse_NoOptions_DrawsEveryGroup()
    {
        var settings = FigureSettings.Parse([]);
        Assert.That(settings.Only, Is.EquivalentTo(FigureSettings.Groups));
        Assert.That(settings.Steps, Is.EqualTo(200));
    }

    [Test]
    public void Parse_OnlyTwoGroups_DrawsThoseAndReadsOtherOptions()
    {
        var settings = FigureSettings.Parse(["--steps", "1000", "--only", "landscape, ewemoe", "--every", "125"]);
        Assert.That(settings.Only, Is.EquivalentTo(new[] { "landscape", "ewemoe" }));
        Assert.That(settings.Steps, Is.EqualTo(1000));
        Assert.That(settings.EvaluateEvery, Is.EqualTo(125));
    }

    [Test]
    public void Parse_OnlyUnknownGroup_ThrowsNamingItAndTheGroups()
    {
        var ex = Assert.Throws<ArgumentException>(() => FigureSettings.Parse(["--only", "landscape,paretto"]));
        Assert.That(ex!.Message, Does.Contain("'paretto'").And.Contain("landscape, pareto, adaptation, ewemoe"));
    }

    [Test]
    public void Parse_OnlyWithoutList_ThrowsNamingOption()
    {
        var ex = Assert.Throws<ArgumentException>(() => FigureSettings.Parse(["--only"]));
        Assert.That(ex!.Message, Does.Contain("--only"));
    }
}
