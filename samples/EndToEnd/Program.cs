using EndToEnd;

// Usage: dotnet run --project samples/EndToEnd [-- <assets folder> [adaptation steps]]
string assets = args.Length > 0 ? args[0] : Path.Combine(AppContext.BaseDirectory, "assets");
int steps = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : EndToEndPipeline.DefaultSteps;
var result = EndToEndPipeline.Run(assets, Console.Out, steps);
result.PrintTable(Console.Out);
return 0;
