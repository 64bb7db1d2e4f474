using TorchSharp;
using WeightEnsembling.World;

// The world tool (issue 17): builds a miniature of the papers' world from pinned npm packages, fonts and grey sets.
//   build --config FILE --out FOLDER [--cache FOLDER] [--threads N]
// See docs/world.md.
var options = new Dictionary<string, string>();
for (int i = 1; i + 1 < args.Length; i += 2)
{
    options[args[i].TrimStart('-')] = args[i + 1];
}

if (args.FirstOrDefault() != "build" || !options.ContainsKey("config") || !options.ContainsKey("out"))
{
    Console.Error.WriteLine("usage: build --config FILE --out FOLDER [--cache FOLDER (default $WEMOE_WORLD_CACHE or ~/.cache/wemoe-world)] [--threads N]");
    return 2;
}

torch.set_num_threads(options.TryGetValue("threads", out string? threads) ? int.Parse(threads, System.Globalization.CultureInfo.InvariantCulture) : Environment.ProcessorCount);
var config = WorldConfig.Load(options["config"]);
var builder = new WorldBuilder(config, options["out"], options.GetValueOrDefault("cache") ?? NpmPackageCache.DefaultFolder,
    line => Console.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {line}"));
var summary = builder.Build();
Console.WriteLine(summary.ToMarkdown());
return 0;
