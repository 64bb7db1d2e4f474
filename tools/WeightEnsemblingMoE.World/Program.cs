using System.Diagnostics;
using System.Globalization;
using TorchSharp;
using WeightEnsembling.Experiments;
using WeightEnsembling.World;

// The world tool (issue 17): builds a miniature of the papers' world from pinned npm packages, fonts and grey sets,
// measures the premises, and runs the merging tables on it. See docs/world.md.
//   build --config FILE --out FOLDER [--cache FOLDER] [--threads N]
//   premises --config FILE --world FOLDER [--threads N]                 (writes FOLDER/results/premises.{json,md})
//   benchmark --config FILE --world FOLDER [--steps N] [--methods A,B] [--no-recipes] [--threads N]
//                                                                        (writes FOLDER/results/benchmark.{json,md})
//   safeguards --config FILE --world FOLDER [--steps N] [--threads N]   (item 6; writes FOLDER/results/safeguards.{json,md})
//   export-quickstart --config FILE --world FOLDER --out FOLDER         (item 8: the QuickStart's assets)
const string Usage = "usage: build --config FILE --out FOLDER [--cache FOLDER (default $WEMOE_WORLD_CACHE or ~/.cache/wemoe-world)] [--threads N]\n"
    + "       premises --config FILE --world FOLDER [--threads N]\n"
    + "       benchmark --config FILE --world FOLDER [--steps N (default 1000)] [--methods NAME,NAME] [--no-recipes] [--threads N]\n"
    + "       safeguards --config FILE --world FOLDER [--steps N (default 1000)] [--threads N]\n"
    + "       export-quickstart --config FILE --world FOLDER --out FOLDER";
var options = new Dictionary<string, string>();
for (int i = 1; i < args.Length; i++)
{
    string key = args[i].TrimStart('-');
    if (key == "no-recipes")
    {
        options[key] = "true";
    }
    else if (i + 1 < args.Length)
    {
        options[key] = args[++i];
    }
}

string command = args.FirstOrDefault() ?? "";
bool ok = command switch
{
    "build" => options.ContainsKey("config") && options.ContainsKey("out"),
    "premises" or "benchmark" or "safeguards" => options.ContainsKey("config") && options.ContainsKey("world"),
    "export-quickstart" => options.ContainsKey("config") && options.ContainsKey("world") && options.ContainsKey("out"),
    _ => false,
};
if (!ok)
{
    Console.Error.WriteLine(Usage);
    return 2;
}

torch.set_num_threads(options.TryGetValue("threads", out string? threads) ? int.Parse(threads, CultureInfo.InvariantCulture) : Environment.ProcessorCount);
var config = WorldConfig.Load(options["config"]);
void Log(string line) => Console.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {line}");
if (command == "build")
{
    var builder = new WorldBuilder(config, options["out"], options.GetValueOrDefault("cache") ?? NpmPackageCache.DefaultFolder, Log);
    var summary = builder.Build();
    Console.WriteLine(summary.ToMarkdown());
    return 0;
}

if (command == "export-quickstart")
{
    foreach (string line in QuickStartExport.Export(config, options["world"], options["out"]))
    {
        Log(line);
    }

    return 0;
}

string world = options["world"];
string results = Path.Combine(world, "results");
Directory.CreateDirectory(results);
var watch = Stopwatch.StartNew();
using var zoo = WorldZoo.Open(config, world);
Log($"world opened in {watch.Elapsed.TotalSeconds:F0} s: {zoo.Tasks.Count} tasks");
if (command == "premises")
{
    var report = WorldPremises.Measure(zoo, new MergingBenchmarkOptions(), Log);
    WriteAtomically(Path.Combine(results, "premises.json"), report.ToJson());
    WriteAtomically(Path.Combine(results, "premises.md"), report.ToMarkdown());
    Console.WriteLine(report.ToMarkdown());
    Log($"premises measured in {watch.Elapsed.TotalSeconds:F0} s; all hold: {report.AllHold}");
    return 0;
}

int steps = options.TryGetValue("steps", out string? s) ? int.Parse(s, CultureInfo.InvariantCulture) : 1000;
var methods = options.TryGetValue("methods", out string? m)
    ? m.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Enum.Parse<MergingMethod>).ToList()
    : null;
var rows = command == "safeguards"
    ? WorldExperiment.RunSafeguards(zoo, steps, Log)
    : WorldExperiment.Run(zoo, steps, methods, !options.ContainsKey("no-recipes"), Log);
var names = zoo.Tasks.Select(t => t.Name).ToList();
string markdown = WorldExperiment.ToMarkdown(rows, names);
WriteAtomically(Path.Combine(results, $"{command}.json"), WorldExperiment.ToJson(rows));
WriteAtomically(Path.Combine(results, $"{command}.md"), markdown);
Console.WriteLine(markdown);
Log($"{command} run in {watch.Elapsed.TotalSeconds:F0} s");
return 0;

static void WriteAtomically(string path, string text)
{
    string temp = path + ".tmp";
    File.WriteAllText(temp, text);
    File.Move(temp, path, overwrite: true);
}
