using System.Diagnostics;
using System.Globalization;
using WeightEnsembling.Analysis;
using WeightEnsembling.Clip;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.Moe;
using WeightEnsembling.Pareto;
using WeightEnsembling.Plotting;
using WeightEnsembling.Tasks;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;
using PlotPoint = WeightEnsembling.Plotting.ParetoPoint;

namespace WeightEnsembling.Zoo;

/// <summary>
/// The <c>figures</c> command: loss landscapes, Pareto fronts, adaptation curves and routing maps of a suite zoo, computed
/// on the first test (and validation) examples of each task and saved as PNG + SVG + CSV (see docs/results/README.md).
/// </summary>
public static class SuiteFigures
{
    private const int EvaluationBatch = 64;
    private const int AdaptationBatch = 16;
    private static readonly double[] LearningRates = [1e-4, 1e-3, 1e-2];
    private static readonly double[] LambdaGrid = Enumerable.Range(1, 10).Select(i => i / 10.0).ToArray();

    /// <summary>Computes and writes every figure into <paramref name="output"/>.</summary>
    /// <param name="data">The prepared data folder.</param>
    /// <param name="zoo">The zoo folder (pre-trained model, one expert per suite task, heads).</param>
    /// <param name="output">The folder the figures are written to (created).</param>
    /// <param name="settings">The options.</param>
    /// <param name="log">Receives a line per phase, with its time.</param>
    public static void Write(string data, string zoo, string output, FigureSettings settings, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(log);
        Directory.CreateDirectory(output);
        if (settings.Threads > 0)
        {
            TorchSharp.torch.set_num_threads(settings.Threads);
        }

        var total = Stopwatch.StartNew();
        using var pretrained = ClipVisionModel.FromPretrained(Path.Combine(zoo, "pretrained"));
        var names = SuiteTask.All.Select(t => t.Name).ToList();
        var experts = SuiteTask.All.Select(t => ClipVisionModel.FromPretrained(Path.Combine(zoo, t.Name))).ToList();
        var heads = SuiteTask.All.Select(t => TaskHead.Load(Path.Combine(zoo, "heads", $"{t.Name}.safetensors"))).ToList();
        heads.ForEach(h => h.SetFrozen(true));
        var tests = SuiteTask.All.Select(t => (TaskDataset)t.Load(data, "test", settings.TestExamples)).ToList();
        var validations = SuiteTask.All.Select(t => (TaskDataset)t.Load(data, "val")).ToList();
        var context = new Context(pretrained, names, experts, heads, tests, validations, settings, output, log);
        try
        {
            if (settings.Only.Contains("landscape"))
            {
                Phase(log, "loss landscape (fashion, mnist)", () => Landscape(context, 0, 1));
                if (settings.ShiftPair)
                {
                    Phase(log, "loss landscape (mnist, mnist-rot90)", () => Landscape(context, 1, 4));
                }
            }

            if (settings.Only.Contains("pareto"))
            {
                Phase(log, "Pareto front (fashion, mnist)", () => ParetoFront(context, [0, 1], settings.ParetoGrid2, "pareto-2-tasks"));
                Phase(log, "Pareto fronts (fashion, mnist, uci-digits)", () => ParetoFront(context, [0, 1, 2], settings.ParetoGrid3, "pareto-3-tasks"));
            }

            if (settings.Only.Contains("adaptation"))
            {
                Phase(log, "adaptation curves and WEMoE routing maps", () => AdaptationAndRouting(context));
            }

            if (settings.EWemoe && settings.Only.Contains("ewemoe"))
            {
                Phase(log, "E-WEMoE routing maps", () => EWemoeRouting(context));
            }
        }
        finally
        {
            experts.ForEach(e => e.Dispose());
            heads.ForEach(h => h.Dispose());
            tests.ForEach(t => t.Dispose());
            validations.ForEach(v => v.Dispose());
        }

        log($"figures: all written to {output} in {total.Elapsed.TotalSeconds:F0} s");
    }

    private static void Phase(Action<string> log, string what, Action action)
    {
        var watch = Stopwatch.StartNew();
        log($"figures: {what}...");
        action();
        log($"figures: {what} done in {watch.Elapsed.TotalSeconds:F0} s");
    }

    // 1. The (τ_a, τ_b) plane with the pair's own task arithmetic and TIES (λ on validation) and a two-task WEMoE merged
    //    at its average routing over both tasks' test samples after adaptation (lr 1e-4).
    private static void Landscape(Context c, int a, int b)
    {
        var s = c.Settings;
        var watch = Stopwatch.StartNew();
        int evaluated = 0;
        var pairExperts = new[] { c.Experts[a], c.Experts[b] };
        var landscapeData = new[] { a, b }.Select(t => c.Tests[t].Subset(Range(Math.Min(s.LandscapeExamples, c.Tests[t].Count)), c.Names[t])).ToList();
        try
        {
            var landscape = LossLandscapes.Compute(c.Pretrained, c.Experts[a], c.Experts[b],
                [ClassificationTask.Of(landscapeData[0], c.Heads[a]), ClassificationTask.Of(landscapeData[1], c.Heads[b])],
                new LossLandscapeOptions { Resolution = s.Resolution, Minimum = -1, Maximum = 1, BatchSize = EvaluationBatch },
                new Callback<LossLandscapePoint>(_ =>
                {
                    if (++evaluated % 100 == 0)
                    {
                        c.Log($"  {evaluated} of {s.Resolution * s.Resolution} grid points ({watch.Elapsed.TotalSeconds:F0} s)");
                    }
                }));
            c.Log($"  grid of {s.Resolution}² points evaluated ({watch.Elapsed.TotalSeconds:F0} s)");
            var markers = new List<LandscapeMarker>();
            double taLambda = ChooseLambda(c, [a, b], l => ModelMerging.TaskArithmetic(c.Pretrained, pairExperts, l));
            using (var ta = ModelMerging.TaskArithmetic(c.Pretrained, pairExperts, taLambda))
            {
                markers.Add(LossLandscapes.Project(c.Pretrained, c.Experts[a], c.Experts[b], ta, Invariant($"task arithmetic (λ = {taLambda})")));
            }

            double tiesLambda = ChooseLambda(c, [a, b], l => ModelMerging.Ties(c.Pretrained, pairExperts, new TiesMergingOptions { ScalingFactor = l }));
            using (var ties = ModelMerging.Ties(c.Pretrained, pairExperts, new TiesMergingOptions { ScalingFactor = tiesLambda }))
            {
                markers.Add(LossLandscapes.Project(c.Pretrained, c.Experts[a], c.Experts[b], ties, Invariant($"TIES (λ = {tiesLambda})")));
            }

            c.Log(Invariant($"  λ chosen on validation: task arithmetic {taLambda}, TIES {tiesLambda} ({watch.Elapsed.TotalSeconds:F0} s)"));
            using (var upscaled = ModelUpscaler.For(c.Pretrained).WithExperts(pairExperts).WithSeed(s.Seed).Build())
            {
                var tasks = new[] { a, b }.Select(t => new ClassificationTask(c.Names[t], c.Tests[t], c.Heads[t])).ToList();
                new AdaptationTrainer().Adapt(upscaled, tasks, Adaptation(s, 1e-4));
                var expertNames = new[] { c.Names[a], c.Names[b] };
                var maps = new[] { a, b }.Select(t => RoutingAnalysis.AverageRouting(upscaled, c.Tests[t], EvaluationBatch, expertNames)).ToList();
                var average = Average(maps, "both tasks");
                var routings = average.ToRoutingVectors();
                try
                {
                    using var merged = upscaled.MergeAndUnload(routings);
                    markers.Add(LossLandscapes.Project(c.Pretrained, c.Experts[a], c.Experts[b], merged, Invariant($"WEMoE, average routing ({s.Steps} steps)")));
                }
                finally
                {
                    foreach (var routing in routings.Values)
                    {
                        routing.Dispose();
                    }
                }
            }

            c.Log(Invariant($"  two-task WEMoE adapted and projected ({watch.Elapsed.TotalSeconds:F0} s)"));
            LossLandscapePlot.SaveAll(landscape.WithMarkers(markers), c.Output, $"loss-landscape-{c.Names[a]}-{c.Names[b]}");
        }
        finally
        {
            landscapeData.ForEach(d => d.Dispose());
        }
    }

    // λ of a merge chosen by average validation accuracy over the given tasks (as MergingBenchmark does).
    private static double ChooseLambda(Context c, int[] taskIndices, Func<double, ClipVisionModel> merge)
    {
        var validation = taskIndices.Select(t => new ClassificationTask(c.Names[t],
            c.Validations[t].Subset(Range(Math.Min(c.Settings.ValidationExamples, c.Validations[t].Count)), c.Names[t]), c.Heads[t])).ToList();
        try
        {
            double best = LambdaGrid[0];
            double bestAccuracy = double.NegativeInfinity;
            foreach (double lambda in LambdaGrid)
            {
                using var candidate = merge(lambda);
                double accuracy = ModelEvaluator.Evaluate("candidate", candidate, validation, EvaluationBatch).AverageAccuracy;
                if (accuracy > bestAccuracy)
                {
                    (best, bestAccuracy) = (lambda, accuracy);
                }
            }

            return best;
        }
        finally
        {
            validation.ForEach(v => v.Data.Dispose());
        }
    }

    // 2. PWEMoE (linear scalarization, trained on the validation splits) on a preference grid, against task arithmetic
    //    with per-task factors λ_t = p_t (ParetoSetEvaluator's scaling factor 1: the grid's corners are the experts) and the
    //    individual experts.
    private static void ParetoFront(Context c, int[] taskIndices, int gridValues, string name)
    {
        var s = c.Settings;
        var experts = taskIndices.Select(t => c.Experts[t]).ToList();
        var tasks = taskIndices.Select(t => ClassificationTask.Of(c.Tests[t], c.Heads[t])).ToList();
        var grid = SimplexGrid.Generate(taskIndices.Length, gridValues).Select(p => (IReadOnlyList<double>)p).ToList();
        using var pareto = ModelUpscaler.For(c.Pretrained).WithExperts(experts).WithSeed(s.Seed).BuildPareto();
        var pwemoeOptions = AdaptationOptions.ForPwemoe(ParetoScalarization.LinearScalarization);
        pwemoeOptions.Steps = s.ParetoSteps;
        pwemoeOptions.Seed = s.Seed;
        new AdaptationTrainer().Adapt(
            pareto, taskIndices.Select(t => ClassificationTask.Of(c.Validations[t], c.Heads[t])).ToList(), pwemoeOptions);
        var pwemoe = ParetoSetEvaluator.Evaluate(pareto, tasks, grid, EvaluationBatch, "PWEMoE (LS)");
        var arithmetic = ParetoSetEvaluator.EvaluateTaskArithmetic(c.Pretrained, experts, tasks, grid, EvaluationBatch, scalingFactor: 1.0);
        var individual = ParetoSetEvaluator.EvaluateExperts(experts, tasks, EvaluationBatch);
        c.Log(Invariant($"  hypervolume: PWEMoE {pwemoe.Hypervolume:F4}, task arithmetic {arithmetic.Hypervolume:F4}"));
        var chart = new ParetoChart(taskIndices.Select(t => c.Names[t]).ToList(), "test accuracy",
        [
            Series(Invariant($"PWEMoE (LS, {s.ParetoSteps} steps)"), pwemoe, connect: true),
            Series("task arithmetic, λ_t = p_t", arithmetic, connect: true),
            Series("fine-tuned models", individual, connect: false),
        ]);
        ParetoFrontPlot.Save(chart, Path.Combine(c.Output, name));
    }

    private static ParetoSeries Series(string label, ParetoEvaluationReport report, bool connect) =>
        new(label, report.Points.Select(p => new PlotPoint(p.Accuracies.ToArray(), p.Preference.ToArray())).ToList(), connect);

    // 3. WEMoE (2-layer routers, six tasks) adapted at three learning rates, evaluated every N steps on the test examples it
    //    adapts on (accuracy with labels, mean prediction entropy without); 4. routing maps of the lr 1e-4 run.
    private static void AdaptationAndRouting(Context c)
    {
        var s = c.Settings;
        var tasks = Enumerable.Range(0, c.Names.Count).Select(t => new ClassificationTask(c.Names[t], c.Tests[t], c.Heads[t])).ToList();
        var runs = new List<AdaptationRun>();
        foreach (double learningRate in LearningRates)
        {
            var watch = Stopwatch.StartNew();
            using var upscaled = ModelUpscaler.For(c.Pretrained).WithExperts(c.Experts).WithSeed(s.Seed).Build();
            var steps = new List<AdaptationStep> { Measure(upscaled, tasks, 0) };
            var progress = new Callback<AdaptationProgress>(p =>
            {
                if (p.Step % s.EvaluateEvery == 0 || p.Step == p.TotalSteps)
                {
                    steps.Add(Measure(upscaled, tasks, p.Step));
                }
            });
            string outcome;
            try
            {
                new AdaptationTrainer().Adapt(upscaled, tasks, Adaptation(s, learningRate), progress);
                outcome = "completed";
            }
            catch (InvalidOperationException e)
            {
                // A diverging run (NaN entropy) is drawn up to its last evaluation.
                outcome = $"stopped: {e.Message}";
            }

            runs.Add(new AdaptationRun(learningRate, steps));
            var last = steps[^1];
            c.Log(Invariant($"  lr {learningRate}: {outcome}; accuracy {steps[0].AverageAccuracy * 100:F1}% → {last.AverageAccuracy * 100:F1}% at step {last.Step}, entropy {steps[0].EntropyLoss:F3} → {last.EntropyLoss:F3} ({watch.Elapsed.TotalSeconds:F0} s)"));
            if (learningRate == LearningRates[0])
            {
                RoutingMaps(c, upscaled, Path.Combine(c.Output, "routing-wemoe"));
            }
        }

        AdaptationCurvesPlot.Save(new AdaptationCurves(c.Names, runs), Path.Combine(c.Output, "adaptation-curves"));
    }

    private static void EWemoeRouting(Context c)
    {
        var s = c.Settings;
        var tasks = Enumerable.Range(0, c.Names.Count).Select(t => new ClassificationTask(c.Names[t], c.Tests[t], c.Heads[t])).ToList();
        using var upscaled = ModelUpscaler.For(c.Pretrained).WithExperts(c.Experts).WithSeed(s.Seed)
            .WithSharedRouter(positionEncoding: true).WithTaskVectorStorage(TaskVectorStorageOptions.Sparse(0.9)).Build();
        new AdaptationTrainer().Adapt(upscaled, tasks, Adaptation(s, 1e-4));
        RoutingMaps(c, upscaled, Path.Combine(c.Output, "routing-ewemoe"));
    }

    private static void RoutingMaps(Context c, UpscaledModel upscaled, string basePath)
    {
        upscaled.RoutingMode = RoutingMode.PerSample;
        var maps = c.Tests.Select(t => RoutingAnalysis.AverageRouting(upscaled, t, EvaluationBatch, c.Names)).ToList();
        RoutingMapPlot.Save(maps, basePath);
    }

    // Accuracy per task and the mean prediction entropy over all tasks' examples, with per-sample routing; the routing mode
    // (batch-mean while training) is restored.
    private static AdaptationStep Measure(UpscaledModel upscaled, IReadOnlyList<ClassificationTask> tasks, int step)
    {
        var mode = upscaled.RoutingMode;
        upscaled.RoutingMode = RoutingMode.PerSample;
        try
        {
            using var noGrad = no_grad();
            var accuracies = new double[tasks.Count];
            double entropy = 0;
            for (int t = 0; t < tasks.Count; t++)
            {
                long correct = 0;
                double entropySum = 0;
                foreach (var batch in tasks[t].Data.Batches(EvaluationBatch))
                {
                    using var owned = batch;
                    using var scope = NewDisposeScope();
                    var logits = tasks[t].Head.forward(upscaled.Model.GetImageFeatures(batch.Images));
                    correct += logits.argmax(-1).eq(batch.Labels!).sum().item<long>();
                    entropySum += EntropyLoss.Compute(logits).item<float>() * batch.Count;
                }

                accuracies[t] = (double)correct / tasks[t].Data.Count;
                entropy += entropySum / tasks[t].Data.Count / tasks.Count;
            }

            return new AdaptationStep(step, accuracies, entropy);
        }
        finally
        {
            upscaled.RoutingMode = mode;
        }
    }

    private static RoutingMap Average(IReadOnlyList<RoutingMap> maps, string task)
    {
        var sum = new double[maps[0].Modules.Count, maps[0].Experts.Count];
        foreach (var map in maps)
        {
            for (int m = 0; m < map.Modules.Count; m++)
            {
                for (int e = 0; e < map.Experts.Count; e++)
                {
                    sum[m, e] += map[m, e] / maps.Count;
                }
            }
        }

        return new RoutingMap(task, maps[0].Modules, maps[0].Experts, sum);
    }

    private static AdaptationOptions Adaptation(FigureSettings s, double learningRate) => new()
    {
        Steps = s.Steps,
        BatchSize = AdaptationBatch,
        LearningRate = learningRate,
        Seed = s.Seed,
    };

    private static long[] Range(long count)
    {
        var indices = new long[count];
        for (long i = 0; i < count; i++)
        {
            indices[i] = i;
        }

        return indices;
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private sealed record Context(
        ClipVisionModel Pretrained,
        IReadOnlyList<string> Names,
        IReadOnlyList<ClipVisionModel> Experts,
        IReadOnlyList<TaskHead> Heads,
        IReadOnlyList<TaskDataset> Tests,
        IReadOnlyList<TaskDataset> Validations,
        FigureSettings Settings,
        string Output,
        Action<string> Log);

    // Reports synchronously on the training thread (Progress<T> would post to the thread pool), so the model is evaluated
    // between two steps.
    private sealed class Callback<T>(Action<T> action) : IProgress<T>
    {
        public void Report(T value) => action(value);
    }
}
