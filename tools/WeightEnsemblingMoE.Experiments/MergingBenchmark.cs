using System.Diagnostics;
using System.Globalization;
using WeightEnsembling.Clip;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.Moe;
using WeightEnsembling.Models;
using WeightEnsembling.Pareto;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.Experiments;

/// <summary>
/// Runs every merging method of the papers' tables on the same tasks and test splits: pre-trained, individual, simple
/// averaging, task arithmetic and TIES (λ chosen on validation), Fisher, RegMean, task-wise and layer-wise AdaMerging,
/// WEMoE with 0/1/2-layer routers, E-WEMoE, low-rank WEMoE and PWEMoE at the uniform preference. Test-time adaptation reads
/// the test images without their labels, as the papers do; labels are used for evaluation only.
/// </summary>
public static class MergingBenchmark
{
    /// <summary>Runs the selected methods.</summary>
    /// <param name="pretrained">The pre-trained model θ_0 (not modified).</param>
    /// <param name="experts">One fine-tuned model per task, in task order (not modified).</param>
    /// <param name="tasks">The tasks, in the experts' order.</param>
    /// <param name="options">The options; <see langword="null"/> for the defaults.</param>
    /// <param name="progress">Receives a line per phase.</param>
    /// <param name="cancellationToken">Stops between phases and at training step boundaries.</param>
    /// <returns>One result per method, in the order run.</returns>
    public static IReadOnlyList<MethodResult> Run(
        ClipVisionModel pretrained,
        IReadOnlyList<ClipVisionModel> experts,
        IReadOnlyList<BenchmarkTask> tasks,
        MergingBenchmarkOptions? options = null,
        IProgress<string>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(tasks);
        options ??= new MergingBenchmarkOptions();
        options.Validate();
        if (experts.Count != tasks.Count || tasks.Count == 0)
        {
            throw new ArgumentException($"One expert per task is needed: {experts.Count} experts, {tasks.Count} tasks.", nameof(experts));
        }

        var results = new List<MethodResult>();
        foreach (var method in options.Methods)
        {
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report($"{method}: running");
            var watch = Stopwatch.StartNew();
            var (report, parameters, detail) = RunOne(method, pretrained, experts, tasks, options, cancellationToken);
            watch.Stop();
            results.Add(new MethodResult(method, report, watch.Elapsed, parameters, detail));
            progress?.Report($"{method}: average {report.AverageAccuracy * 100:F1}% in {watch.Elapsed.TotalSeconds:F0} s");
        }

        return results;
    }

    private static (EvaluationReport Report, ParameterCount? Parameters, string Detail) RunOne(
        MergingMethod method,
        ClipVisionModel pretrained,
        IReadOnlyList<ClipVisionModel> experts,
        IReadOnlyList<BenchmarkTask> tasks,
        MergingBenchmarkOptions options,
        CancellationToken ct)
    {
        var test = tasks.Select(t => new ClassificationTask(t.Name, t.Test, t.Head)).ToList();
        string name = Label(method);
        switch (method)
        {
            case MergingMethod.Pretrained:
                return (ModelEvaluator.Evaluate(name, pretrained, test, options.EvaluationBatchSize, cancellationToken: ct), ParameterCount.Of(pretrained), "");
            case MergingMethod.Individual:
            {
                var scores = tasks.Select((t, i) => ModelEvaluator.Evaluate(name, experts[i], [test[i]], options.EvaluationBatchSize, cancellationToken: ct).Scores[0]).ToList();
                return (new EvaluationReport(name, scores), null, "each expert on its own task");
            }

            case MergingMethod.SimpleAverage:
                return Plain(name, ModelMerging.SimpleAverage(experts), test, options, ct, "");
            case MergingMethod.TaskArithmetic:
                return SearchLambda(name, l => ModelMerging.TaskArithmetic(pretrained, experts, l), tasks, test, options, ct);
            case MergingMethod.Ties:
                return SearchLambda(name, l => ModelMerging.Ties(pretrained, experts, new TiesMergingOptions { ScalingFactor = l }), tasks, test, options, ct);
            case MergingMethod.Fisher:
                return Plain(name, FisherMerging.Run(experts, tasks.Select(t => t.Head).ToList(), tasks.Select(t => t.Validation).ToList(),
                    new FisherMergingOptions { ExampleCount = options.DataAwareExamples, Seed = options.Seed }, cancellationToken: ct), test, options, ct, $"{options.DataAwareExamples} validation examples per task");
            case MergingMethod.RegMean:
                return Plain(name, RegMean.Run(experts, tasks.Select(t => t.Validation).ToList(),
                    new RegMeanOptions { ExampleCount = options.DataAwareExamples, Seed = options.Seed }, cancellationToken: ct), test, options, ct, $"{options.DataAwareExamples} validation examples per task");
            case MergingMethod.AdaMergingTaskWise:
            case MergingMethod.AdaMergingLayerWise:
            {
                var granularity = method == MergingMethod.AdaMergingTaskWise ? AdaMergingGranularity.TaskWise : AdaMergingGranularity.LayerWise;
                using var model = AdaMergingModel.Create(pretrained, experts, new AdaMergingOptions { Granularity = granularity });
                new AdaptationTrainer().Adapt(model, test, Adaptation(options, options.AdaMergingLearningRate), cancellationToken: ct);
                // The deployed model is plain; what the method trained is the merging coefficients.
                var merged = model.MergeAndUnload();
                var count = ParameterCount.Of(merged) with { Trainable = model.MergeWeight.numel() };
                return Plain(name, merged, test, options, ct, $"{options.AdaptationSteps} steps, lr {options.AdaMergingLearningRate}", count);
            }

            case MergingMethod.WemoeZeroLayer:
            case MergingMethod.WemoeOneLayer:
            case MergingMethod.Wemoe:
            case MergingMethod.EWemoe:
            case MergingMethod.LowRankWemoe:
            {
                var upscaler = ModelUpscaler.For(pretrained).WithExperts(experts).WithSeed(options.Seed)
                    .WithPretrainedProjection(options.WemoePretrainedProjection);
                if (options.WemoeInitLambda is { } initLambda)
                {
                    upscaler = upscaler.WithInitLambda(initLambda);
                }

                upscaler = method switch
                {
                    MergingMethod.WemoeZeroLayer => upscaler.WithRouterDepth(0),
                    MergingMethod.WemoeOneLayer => upscaler.WithRouterDepth(1),
                    MergingMethod.EWemoe => upscaler.WithSharedRouter(positionEncoding: true).WithTaskVectorStorage(TaskVectorStorageOptions.Sparse(0.9)),
                    MergingMethod.LowRankWemoe => upscaler.WithTaskVectorStorage(TaskVectorStorageOptions.LowRank(options.LowRank)),
                    _ => upscaler,
                };
                using var upscaled = upscaler.Build();
                upscaled.TrainingRoutingMode = options.WemoeTrainingRouting;
                var adaptation = Adaptation(options, options.WemoeLearningRate);
                if (options.WemoeCosineSteps is { } cosine)
                {
                    adaptation.CosineSchedule = true;
                    adaptation.CosineSteps = cosine;
                }

                adaptation.AnchorStrength = options.WemoeAnchorStrength;
                if (options.WemoeDiversityWeight > 0)
                {
                    adaptation.Objective = new EntropyObjective { DiversityWeight = options.WemoeDiversityWeight };
                }

                if (options.WemoeEarlyStoppingInterval is { } interval)
                {
                    adaptation.EarlyStopping = new EarlyStopping
                    {
                        HeldOut = tasks.Select(t => ClassificationTask.Of(t.Validation, t.Head)).ToList(),
                        Interval = interval,
                        BatchSize = options.EvaluationBatchSize,
                    };
                }

                var adapted = new AdaptationTrainer().Adapt(upscaled, test, adaptation, cancellationToken: ct);
                var report = ModelEvaluator.Evaluate(name, upscaled, test, options.EvaluationBatchSize, cancellationToken: ct);
                var safeguards = new List<string>();
                if (options.WemoeAnchorStrength > 0)
                {
                    safeguards.Add(string.Create(CultureInfo.InvariantCulture, $"anchor {options.WemoeAnchorStrength}"));
                }

                if (options.WemoeDiversityWeight > 0)
                {
                    safeguards.Add(string.Create(CultureInfo.InvariantCulture, $"diversity {options.WemoeDiversityWeight}"));
                }

                if (adapted.RestoredStep is { } restored)
                {
                    safeguards.Add($"early stopping every {options.WemoeEarlyStoppingInterval} steps, kept step {restored} of {adapted.StepsCompleted}");
                }

                string recipe = string.Create(CultureInfo.InvariantCulture,
                    $"{options.AdaptationSteps} steps, lr {options.WemoeLearningRate}{(options.WemoeCosineSteps is { } c ? $" cosine over {c}" : "")}, {(options.WemoeTrainingRouting == RoutingMode.PerSample ? "per-sample" : "batch-reduced")} routing in training, λ0 = {options.WemoeInitLambda ?? 0.3}{(options.WemoePretrainedProjection ? ", pre-trained projection" : "")}{(safeguards.Count > 0 ? "; " + string.Join(", ", safeguards) : "")}; {RoutingSummary(upscaled, test, options.EvaluationBatchSize, ct)}");
                return (report, upscaled.CountParameters(), recipe);
            }

            case MergingMethod.PwemoeUniform:
            {
                using var pareto = ModelUpscaler.For(pretrained).WithExperts(experts).WithSeed(options.Seed).BuildPareto();
                var pwemoeOptions = AdaptationOptions.ForPwemoe();
                pwemoeOptions.Steps = options.ParetoSteps;
                pwemoeOptions.Seed = options.Seed;
                new AdaptationTrainer().Adapt(
                    pareto, tasks.Select(t => ClassificationTask.Of(t.Validation, t.Head)).ToList(), pwemoeOptions, cancellationToken: ct);
                var uniform = Enumerable.Repeat(1.0 / tasks.Count, tasks.Count).ToArray();
                var count = pareto.CountParameters();
                return Plain(name, pareto.MergeAndUnload(uniform), test, options, ct, $"LS, {options.ParetoSteps} steps on validation", count);
            }

            default:
                throw new ArgumentOutOfRangeException(nameof(method), method, "Unknown method.");
        }
    }

    /// <summary>
    /// Where the adapted routers send each task's test images, averaged over the task's images: the mean of Σ_t r_t over
    /// tasks and upscaled modules (T·λ0 at the start), the smallest weight, and the share of (task, module) pairs whose
    /// largest weight is the task's own expert.
    /// </summary>
    private static string RoutingSummary(UpscaledModel model, IReadOnlyList<ClassificationTask> test, int batchSize, CancellationToken ct)
    {
        double sum = 0, min = double.PositiveInfinity;
        int own = 0, cells = 0;
        for (int t = 0; t < test.Count; t++)
        {
            var map = WeightEnsembling.Analysis.RoutingAnalysis.AverageRouting(model, test[t].Data, batchSize, cancellationToken: ct);
            for (int m = 0; m < map.Modules.Count; m++)
            {
                var row = Enumerable.Range(0, map.Experts.Count).Select(e => map[m, e]).ToArray();
                sum += row.Sum();
                min = Math.Min(min, row.Min());
                own += t < row.Length && Array.IndexOf(row, row.Max()) == t ? 1 : 0;
                cells++;
            }
        }

        return string.Create(CultureInfo.InvariantCulture, $"test routing: mean Σr {sum / cells:F2}, min r {min:F2}, own expert largest in {100.0 * own / cells:F0}% of (task, module)");
    }

    private static AdaptationOptions Adaptation(MergingBenchmarkOptions options, double learningRate) => new()
    {
        Steps = options.AdaptationSteps,
        BatchSize = options.BatchSize,
        LearningRate = learningRate,
        Seed = options.Seed,
    };

    private static (EvaluationReport, ParameterCount?, string) Plain(
        string name, ClipVisionModel model, IReadOnlyList<ClassificationTask> test, MergingBenchmarkOptions options, CancellationToken ct, string detail, ParameterCount? count = null)
    {
        using (model)
        {
            return (ModelEvaluator.Evaluate(name, model, test, options.EvaluationBatchSize, cancellationToken: ct), count ?? ParameterCount.Of(model), detail);
        }
    }

    /// <summary>
    /// The λ of the grid whose task-arithmetic merge has the best average validation accuracy (the first on ties), and
    /// that accuracy (0–1).
    /// </summary>
    /// <param name="pretrained">θ_0.</param>
    /// <param name="experts">The experts, in task order.</param>
    /// <param name="tasks">The tasks (their validation splits and heads are used).</param>
    /// <param name="options">The options (λ grid, evaluation batch size); <see langword="null"/> for the defaults.</param>
    /// <param name="cancellationToken">Cancels between evaluations.</param>
    /// <returns>The chosen λ and its validation accuracy.</returns>
    public static (double Lambda, double ValidationAccuracy) TaskArithmeticLambda(
        ClipVisionModel pretrained, IReadOnlyList<ClipVisionModel> experts, IReadOnlyList<BenchmarkTask> tasks,
        MergingBenchmarkOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(tasks);
        options ??= new MergingBenchmarkOptions();
        options.Validate();
        return ChooseLambda("Task arithmetic", l => ModelMerging.TaskArithmetic(pretrained, experts, l), tasks, options, cancellationToken);
    }

    // λ chosen by average validation accuracy, as the papers do; the chosen model is then evaluated on test.
    private static (EvaluationReport, ParameterCount?, string) SearchLambda(
        string name, Func<double, ClipVisionModel> merge, IReadOnlyList<BenchmarkTask> tasks, IReadOnlyList<ClassificationTask> test, MergingBenchmarkOptions options, CancellationToken ct)
    {
        var (best, bestAccuracy) = ChooseLambda(name, merge, tasks, options, ct);
        return Plain(name, merge(best), test, options, ct, string.Create(CultureInfo.InvariantCulture, $"λ = {best} (validation {bestAccuracy * 100:F1}%)"));
    }

    private static (double Lambda, double ValidationAccuracy) ChooseLambda(
        string name, Func<double, ClipVisionModel> merge, IReadOnlyList<BenchmarkTask> tasks, MergingBenchmarkOptions options, CancellationToken ct)
    {
        var validation = tasks.Select(t => new ClassificationTask(t.Name, t.Validation, t.Head)).ToList();
        double best = options.LambdaGrid[0];
        double bestAccuracy = double.NegativeInfinity;
        foreach (var lambda in options.LambdaGrid)
        {
            using var candidate = merge(lambda);
            double accuracy = ModelEvaluator.Evaluate(name, candidate, validation, options.EvaluationBatchSize, cancellationToken: ct).AverageAccuracy;
            if (accuracy > bestAccuracy)
            {
                (best, bestAccuracy) = (lambda, accuracy);
            }
        }

        return (best, bestAccuracy);
    }

    /// <summary>The row label of a method, as in the papers' tables.</summary>
    /// <param name="method">The method.</param>
    /// <returns>The label.</returns>
    public static string Label(MergingMethod method) => method switch
    {
        MergingMethod.Pretrained => "Pre-trained",
        MergingMethod.Individual => "Individual",
        MergingMethod.SimpleAverage => "Simple averaging",
        MergingMethod.TaskArithmetic => "Task arithmetic",
        MergingMethod.Ties => "TIES-merging",
        MergingMethod.Fisher => "Fisher merging",
        MergingMethod.RegMean => "RegMean",
        MergingMethod.AdaMergingTaskWise => "AdaMerging (task-wise)",
        MergingMethod.AdaMergingLayerWise => "AdaMerging (layer-wise)",
        MergingMethod.WemoeZeroLayer => "WEMoE (0-layer)",
        MergingMethod.WemoeOneLayer => "WEMoE (1-layer)",
        MergingMethod.Wemoe => "WEMoE (2-layer)",
        MergingMethod.EWemoe => "E-WEMoE (p = 0.9)",
        MergingMethod.LowRankWemoe => "WEMoE (low-rank)",
        MergingMethod.PwemoeUniform => "PWEMoE (uniform preference)",
        _ => method.ToString(),
    };
}
