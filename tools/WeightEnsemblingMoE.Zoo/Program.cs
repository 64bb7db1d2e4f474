using System.Text;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Experiments;
using WeightEnsembling.Tasks;
using WeightEnsembling.Zoo;

// The suite tool: prepare the data, build the zoo, run the benchmark. See docs/results/README.md and docs/datasets.md.
//   prepare OUT_DATA [seed]
//   build-zoo DATA ZOO [seed] [pretrain-steps] [finetune-steps]
//   export-quickstart DATA ZOO OUT_ASSETS
//   run DATA ZOO OUT_RESULTS [adaptation-steps]          (the table, then the figures into OUT_RESULTS/figures)
//   safeguards DATA ZOO OUT_RESULTS [adaptation-steps]   (issue 17 item 6: WEMoE with each safeguard, OUT_RESULTS/safeguards.md)
//   figures DATA ZOO OUT_RESULTS [steps] [--options]     (the figures only, into OUT_RESULTS/figures; see FigureSettings; --only GROUPS redraws some)
torch.set_num_threads(Environment.ProcessorCount);
switch (args.FirstOrDefault())
{
    case "prepare":
        SuiteData.Prepare(args[1], args.Length > 2 ? int.Parse(args[2]) : 0);
        Console.WriteLine($"prepared data in {args[1]}");
        return 0;
    case "build-zoo":
        ZooBuilder.Build(args[1], args[2], args.Length > 3 ? int.Parse(args[3]) : 0,
            args.Length > 4 ? int.Parse(args[4]) : 600, args.Length > 5 ? int.Parse(args[5]) : 300, Console.WriteLine);
        return 0;
    case "export-quickstart":
        QuickStartAssets.Export(args[1], args[2], args[3]);
        Console.WriteLine($"wrote the QuickStart assets to {args[3]}");
        return 0;
    case "diagnose":
        Console.WriteLine(Diagnosis.Run(args[1], args[2], args.Length > 3 ? int.Parse(args[3]) : 1000, args.Length > 4 ? double.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture) : 0.3));
        return 0;
    case "diagnose-tta":
        Console.WriteLine(Diagnosis.Adapt(args[1], args[2], int.Parse(args[3]), double.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture), int.Parse(args[5]), int.Parse(args[6])));
        return 0;
    case "run":
        return Run(args[1], args[2], args[3], args.Length > 4 ? int.Parse(args[4]) : 1000);
    case "safeguards":
        return Safeguards(args[1], args[2], args[3], args.Length > 4 ? int.Parse(args[4]) : 1000);
    case "figures":
        SuiteFigures.Write(args[1], args[2], Path.Combine(args[3], "figures"), FigureSettings.Parse(args[4..]), Console.WriteLine);
        return 0;
    default:
        Console.Error.WriteLine("usage: prepare OUT [seed] | build-zoo DATA ZOO [seed] [pretrain-steps] [finetune-steps] | run DATA ZOO OUT [adaptation-steps] | safeguards DATA ZOO OUT [adaptation-steps] | figures DATA ZOO OUT [steps] [--every N --examples N --val-examples N --resolution N --landscape-examples N --pareto-steps N --pareto-grid2 N --pareto-grid3 N --seed N --threads N --shift-pair --no-ewemoe --only landscape,pareto,adaptation,ewemoe]");
        return 2;
}

static int Safeguards(string data, string zoo, string output, int steps)
{
    using var pretrained = ClipVisionModel.FromPretrained(Path.Combine(zoo, "pretrained"));
    var experts = SuiteTask.All.Select(t => ClipVisionModel.FromPretrained(Path.Combine(zoo, t.Name))).ToList();
    var tasks = SuiteTask.All.Select(t => new BenchmarkTask(
        t.Name, t.Load(data, "val"), t.Load(data, "test"), TaskHead.Load(Path.Combine(zoo, "heads", $"{t.Name}.safetensors")))).ToList();
    var started = DateTime.UtcNow;
    var rows = SafeguardStudy.Run(pretrained, experts, tasks, o => o.AdaptationSteps = steps, new Progress<string>(Console.WriteLine));
    var markdown = new StringBuilder();
    markdown.AppendLine("# WEMoE with and without the safeguards (issue 17, item 6)").AppendLine();
    markdown.AppendLine($"Run {started:yyyy-MM-dd HH:mm} UTC on {Environment.ProcessorCount} cores: `dotnet run -c Release --project tools/WeightEnsemblingMoE.Zoo -- safeguards {data} {zoo} {output} {steps}`.").AppendLine();
    markdown.AppendLine(EvaluationReport.ToMarkdown(rows.Select(r => new EvaluationReport(r.Label, r.Result.Report.Scores, r.Result.Report.Elapsed))));
    markdown.AppendLine().AppendLine("| variant | time (s) | detail |").AppendLine("| --- | ---: | --- |");
    foreach (var (label, result) in rows)
    {
        markdown.AppendLine(System.FormattableString.Invariant($"| {label} | {result.Elapsed.TotalSeconds:F0} | {result.Detail} |"));
    }

    Directory.CreateDirectory(output);
    File.WriteAllText(Path.Combine(output, "safeguards.md"), markdown.ToString());
    Console.WriteLine(markdown);
    foreach (var expert in experts)
    {
        expert.Dispose();
    }

    return 0;
}

static int Run(string data, string zoo, string output, int steps)
{
    using var pretrained = ClipVisionModel.FromPretrained(Path.Combine(zoo, "pretrained"));
    var experts = SuiteTask.All.Select(t => ClipVisionModel.FromPretrained(Path.Combine(zoo, t.Name))).ToList();
    var tasks = SuiteTask.All.Select(t => new BenchmarkTask(
        t.Name, t.Load(data, "val"), t.Load(data, "test"), TaskHead.Load(Path.Combine(zoo, "heads", $"{t.Name}.safetensors")))).ToList();
    var options = new MergingBenchmarkOptions { AdaptationSteps = steps };
    var started = DateTime.UtcNow;
    var results = MergingBenchmark.Run(pretrained, experts, tasks, options, new Progress<string>(Console.WriteLine));
    Directory.CreateDirectory(output);
    var markdown = new StringBuilder();
    markdown.AppendLine("# Real-data merging benchmark").AppendLine();
    markdown.AppendLine($"Run {started:yyyy-MM-dd HH:mm} UTC on {Environment.ProcessorCount} cores: `dotnet run -c Release --project tools/WeightEnsemblingMoE.Zoo -- run {data} {zoo} {output} {steps}`.").AppendLine();
    markdown.AppendLine("## Test accuracy (%)").AppendLine();
    markdown.AppendLine(EvaluationReport.ToMarkdown(results.Select(r => r.Report)));
    markdown.AppendLine("## Parameters and time").AppendLine();
    markdown.AppendLine("| method | trainable | total | MB | time (s) | note |");
    markdown.AppendLine("| --- | ---: | ---: | ---: | ---: | --- |");
    foreach (var r in results)
    {
        markdown.AppendLine($"| {r.Report.Method} | {r.Parameters?.Trainable.ToString("N0") ?? "-"} | {r.Parameters?.Total.ToString("N0") ?? "-"} | {(r.Parameters is null ? "-" : (r.Parameters.Bytes / 1048576.0).ToString("F2"))} | {r.Elapsed.TotalSeconds:F0} | {r.Detail} |");
    }

    File.WriteAllText(Path.Combine(output, "benchmark.md"), markdown.ToString());
    File.WriteAllText(Path.Combine(output, "benchmark.json"), "[" + string.Join(",\n", results.Select(r => r.Report.ToJson())) + "]");
    Console.WriteLine(markdown);
    experts.ForEach(e => e.Dispose());
    tasks.ForEach(t => { t.Validation.Dispose(); t.Test.Dispose(); t.Head.Dispose(); });

    // The figures use the run's adaptation steps, evaluated about eight times along the way.
    SuiteFigures.Write(data, zoo, Path.Combine(output, "figures"),
        new FigureSettings { Steps = steps, EvaluateEvery = Math.Max(25, steps / 8), Threads = 0 }, Console.WriteLine);
    return 0;
}
