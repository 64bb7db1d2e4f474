using System.Text.RegularExpressions;
using DocsSnippets;
using WeightEnsembling.Tests.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Docs;

[TestFixture, NonParallelizable]
public sealed partial class DocsSnippetsTests
{
    private static readonly string Root = FindRoot();

    [Test]
    public void EveryQuotedSnippet_MatchesItsRegionInDocsSnippets()
    {
        var regions = Regions();
        var quotes = Quotes().ToList();
        Assert.That(quotes, Is.Not.Empty);
        var usings = RegionUsings();
        foreach (var (page, name, quote) in quotes)
        {
            Assert.That(regions.ContainsKey(name), Is.True, $"{page} quotes snippet '{name}', which no #region in samples/DocsSnippets defines.");
            // A quote may open with using directives (then a blank line): each must be one of the region's file.
            var (quotedUsings, code) = SplitUsings(quote);
            Assert.That(usings[name], Is.SupersetOf(quotedUsings), $"{page}: snippet '{name}' quotes a using its file does not have.");
            Assert.That(code, Is.EqualTo(regions[name]), $"{page}: snippet '{name}' differs from samples/DocsSnippets.");
        }
    }

    [Test]
    public void EveryRegionInDocsSnippets_IsQuotedByAPage()
    {
        var quoted = Quotes().Select(q => q.Name).ToHashSet();
        Assert.That(Regions().Keys.Where(name => !quoted.Contains(name)), Is.Empty);
    }

    [Test]
    public void GettingStartedSnippets_OnTinyFolders_UpcycleRunAndRoundTripRouters()
    {
        string folder = Directory.CreateTempSubdirectory("wemoe-docs").FullName;
        try
        {
            using (var pretrained = TinyClip.Pretrained())
            {
                pretrained.SaveTo(Path.Combine(folder, "pretrained"));
                for (int t = 0; t < 2; t++)
                {
                    using var expert = TinyClip.Expert(pretrained, 20 + t);
                    expert.SaveTo(Path.Combine(folder, $"expert{t}"));
                }
            }

            string[] experts = [Path.Combine(folder, "expert0"), Path.Combine(folder, "expert1")];
            using var images = TinyClip.Images(2, 5);
            using var upscaled = GettingStartedSnippets.FirstUpcycle(Path.Combine(folder, "pretrained"), experts, images);
            using (no_grad())
            {
                foreach (var parameter in upscaled.TrainableParameters())
                {
                    parameter.add_(0.5);
                }
            }

            var pool = WeightEnsembling.Models.ModelPool.FromFolders(Path.Combine(folder, "pretrained"), experts);
            using var built = GettingStartedSnippets.Builder(pool);
            Assert.That(built.ExpertNames, Is.EqualTo(new[] { "expert0", "expert1" }));
            using var rebuilt = GettingStartedSnippets.SaveAndReload(upscaled, pool, Path.Combine(folder, "saved"));
            rebuilt.RoutingMode = WeightEnsembling.Moe.RoutingMode.PerSample;
            using var expected = upscaled.Forward(images);
            using var actual = rebuilt.Forward(images);
            Assert.That(upscaled.Modules, Has.Count.EqualTo(TinyClip.Config.NumHiddenLayers));
            Assert.That(TinyClip.MaxDifference(actual.ImageEmbeds!, expected.ImageEmbeds!), Is.LessThan(1e-6));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static Dictionary<string, string> Regions()
    {
        var regions = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var file in Directory.GetFiles(Path.Combine(Root, "samples", "DocsSnippets"), "*.cs"))
        {
            foreach (Match match in RegionPattern().Matches(File.ReadAllText(file).ReplaceLineEndings("\n")))
            {
                regions.Add(match.Groups["name"].Value, Dedent(match.Groups["code"].Value));
            }
        }

        return regions;
    }

    private static Dictionary<string, HashSet<string>> RegionUsings()
    {
        var usings = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var file in Directory.GetFiles(Path.Combine(Root, "samples", "DocsSnippets"), "*.cs"))
        {
            string text = File.ReadAllText(file).ReplaceLineEndings("\n");
            var directives = text.Split('\n').Where(l => UsingDirective().IsMatch(l)).ToHashSet(StringComparer.Ordinal);
            foreach (Match match in RegionPattern().Matches(text))
            {
                usings.Add(match.Groups["name"].Value, directives);
            }
        }

        return usings;
    }

    private static (List<string> Usings, string Code) SplitUsings(string quote)
    {
        var lines = quote.Split('\n');
        var usings = lines.TakeWhile(l => UsingDirective().IsMatch(l)).ToList();
        // A quote of using directives only (a region that is itself a using list) is compared as code.
        bool onlyUsings = lines.Skip(usings.Count).All(string.IsNullOrWhiteSpace);
        return usings.Count == 0 || onlyUsings ? ([], quote) : (usings, Dedent(string.Join("\n", lines.Skip(usings.Count))));
    }

    private static IEnumerable<(string Page, string Name, string Code)> Quotes()
    {
        foreach (var page in Directory.GetFiles(Path.Combine(Root, "docs"), "*.md", SearchOption.AllDirectories))
        {
            foreach (Match match in QuotePattern().Matches(File.ReadAllText(page).ReplaceLineEndings("\n")))
            {
                yield return (Path.GetRelativePath(Root, page), match.Groups["name"].Value, Dedent(match.Groups["code"].Value));
            }
        }
    }

    private static string Dedent(string code)
    {
        var lines = code.TrimEnd().Split('\n').SkipWhile(string.IsNullOrWhiteSpace).ToArray();
        int indent = lines.Where(l => l.Trim().Length > 0).Min(l => l.Length - l.TrimStart().Length);
        return string.Join("\n", lines.Select(l => l.Length >= indent ? l[indent..] : l.TrimStart()));
    }

    private static string FindRoot()
    {
        for (var directory = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "WeightEnsemblingMoE.sln")))
            {
                return directory.FullName;
            }
        }

        throw new DirectoryNotFoundException("WeightEnsemblingMoE.sln not found above the test directory.");
    }

    [GeneratedRegex(@"^[ \t]*#region (?<name>\w+)\n(?<code>.*?)^[ \t]*#endregion", RegexOptions.Multiline | RegexOptions.Singleline)]
    private static partial Regex RegionPattern();

    [GeneratedRegex(@"<!-- snippet: (?<name>\w+) -->\n```csharp\n(?<code>.*?)^```", RegexOptions.Multiline | RegexOptions.Singleline)]
    private static partial Regex QuotePattern();

    [GeneratedRegex(@"^using (static )?[A-Za-z_][\w.]*;$")]
    private static partial Regex UsingDirective();
}
