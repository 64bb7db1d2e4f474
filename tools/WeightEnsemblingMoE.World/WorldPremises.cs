using System.Globalization;
using WeightEnsembling.Clip;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Experiments;
using WeightEnsembling.Merging;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.World;

/// <summary>
/// Measures issue 17's premises on a built world before any merging method is run, with the thresholds the issue fixed:
/// P1 zero-shot average ≤ 60% and every expert ≥ 20 points above its zero-shot accuracy; P2 experts' average ≥ 85% and
/// task arithmetic (λ on validation) ≥ 10 points below it; P3 a linear probe on the token-averaged input of each MLP of the
/// task-arithmetic model names a single test image's task with ≥ 90% accuracy in most layers; P4 oracle routing (every
/// MLP one-hot to the image's own expert, the rest task arithmetic) within 3 points of the experts.
/// </summary>
public static class WorldPremises
{
    /// <summary>Measures the premises.</summary>
    /// <param name="zoo">The world.</param>
    /// <param name="options">The λ grid and evaluation batch size (as the merging benchmark uses them).</param>
    /// <param name="log">Receives a line per phase.</param>
    public static WorldPremisesReport Measure(WorldZoo zoo, MergingBenchmarkOptions options, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(zoo);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(log);
        var c = CultureInfo.InvariantCulture;
        var tasks = zoo.Tasks;
        var test = tasks.Select(t => new ClassificationTask(t.Name, t.Test, t.Head)).ToList();
        int batch = options.EvaluationBatchSize;

        var zeroShot = Percent(ModelEvaluator.Evaluate("Pre-trained", zoo.Pretrained, test, batch));
        log("zero-shot: " + string.Join(", ", zeroShot.Select(a => a.ToString("F1", c))));
        var individual = test.Select((t, i) => 100 * ModelEvaluator.Evaluate("Individual", zoo.Experts[i], [t], batch).Scores[0].Accuracy).ToList();
        log("experts: " + string.Join(", ", individual.Select(a => a.ToString("F1", c))));

        var (lambda, validation) = MergingBenchmark.TaskArithmeticLambda(zoo.Pretrained, zoo.Experts, tasks, options);
        using var taskArithmetic = ModelMerging.TaskArithmetic(zoo.Pretrained, zoo.Experts, lambda);
        var merged = Percent(ModelEvaluator.Evaluate("Task arithmetic", taskArithmetic, test, batch));
        log(string.Create(c, $"task arithmetic: λ = {lambda} (validation {100 * validation:F1}%), test average {merged.Average():F1}%"));

        var probe = ProbeLayers(taskArithmetic, tasks, batch, out var confusion);
        log("task probe per layer: " + string.Join(", ", probe.Select(a => a.ToString("F1", c))));

        var oracle = Oracle(zoo, taskArithmetic, test, batch);
        List<double> oraclePapers;
        if (lambda == 0.3)
        {
            oraclePapers = oracle;
        }
        else
        {
            using var papers = ModelMerging.TaskArithmetic(zoo.Pretrained, zoo.Experts, 0.3);
            oraclePapers = Oracle(zoo, papers, test, batch);
        }

        log(string.Create(c, $"oracle routing: {oracle.Average():F1}% (rest at λ = {lambda}), {oraclePapers.Average():F1}% (rest at λ = 0.3)"));
        var attribution = OracleAttribution(zoo, taskArithmetic, test, batch);
        log("oracle routing plus one more group from the own expert: " + string.Join(", ", attribution.Select(a => string.Create(c, $"{a.Group} {a.Accuracy.Average():F1}%"))));

        double minGain = individual.Zip(zeroShot, (e, z) => e - z).Min();
        int layersAbove = probe.Count(a => a >= 90);
        var premises = new List<PremiseCheck>
        {
            new("P1a", "zero-shot average (%)", zeroShot.Average(), "≤ 60", zeroShot.Average() <= 60),
            new("P1b", "smallest expert − zero-shot gain over the tasks (points)", minGain, "≥ 20", minGain >= 20),
            new("P2a", "experts' average (%)", individual.Average(), "≥ 85", individual.Average() >= 85),
            new("P2b", string.Create(c, $"experts' average − task arithmetic's (λ = {lambda} on validation) (points)"), individual.Average() - merged.Average(), "≥ 10", individual.Average() - merged.Average() >= 10),
            new("P3", string.Create(c, $"layers (of {probe.Count}) where the task probe reaches ≥ 90% on single test images"), layersAbove, string.Create(c, $"> {probe.Count / 2} (most layers)"), layersAbove > probe.Count / 2),
            new("P4", string.Create(c, $"experts' average − oracle routing's (rest at λ = {lambda}) (points)"), individual.Average() - oracle.Average(), "≤ 3", individual.Average() - oracle.Average() <= 3),
        };
        return new WorldPremisesReport
        {
            Tasks = tasks.Select(t => t.Name).ToList(),
            ZeroShot = zeroShot,
            Individual = individual,
            TaskArithmeticLambda = lambda,
            TaskArithmetic = merged,
            ProbeAccuracy = probe,
            ProbeConfusion = confusion,
            Oracle = oracle,
            OraclePapersLambda = oraclePapers,
            OracleAttribution = attribution.ToDictionary(a => a.Group, a => (IReadOnlyList<double>)a.Accuracy),
            Premises = premises,
        };
    }

    /// <summary>
    /// For each encoder layer, a multinomial logistic-regression probe (features standardised on the training side, Adam,
    /// full batch) fitted on the validation images' token-averaged MLP inputs to name their task, scored on the test
    /// images one by one (percent).
    /// </summary>
    public static List<double> ProbeLayers(ClipVisionModel model, IReadOnlyList<BenchmarkTask> tasks, int batchSize) =>
        ProbeLayers(model, tasks, batchSize, out _);

    /// <summary>
    /// As <see cref="ProbeLayers(ClipVisionModel, IReadOnlyList{BenchmarkTask}, int)"/>; <paramref name="lastLayerConfusion"/>
    /// receives the last layer's confusion matrix in percent of each true task's test images ([true][predicted]).
    /// </summary>
    public static List<double> ProbeLayers(ClipVisionModel model, IReadOnlyList<BenchmarkTask> tasks, int batchSize, out double[][] lastLayerConfusion)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tasks);
        var (trainFeatures, trainTasks) = MlpInputs(model, tasks.Select(t => t.Validation).ToList(), batchSize);
        var (testFeatures, testTasks) = MlpInputs(model, tasks.Select(t => t.Test).ToList(), batchSize);
        try
        {
            var accuracies = new List<double>();
            lastLayerConfusion = [];
            for (int layer = 0; layer < trainFeatures.Count; layer++)
            {
                accuracies.Add(100 * Probe(trainFeatures[layer], trainTasks, testFeatures[layer], testTasks, tasks.Count, out lastLayerConfusion));
            }

            return accuracies;
        }
        finally
        {
            trainFeatures.ForEach(t => t.Dispose());
            testFeatures.ForEach(t => t.Dispose());
            trainTasks.Dispose();
            testTasks.Dispose();
        }
    }

    /// <summary>Per layer, the token-averaged MLP inputs [N, D] of every image of the datasets, and each image's dataset index [N].</summary>
    private static (List<Tensor> Features, Tensor Tasks) MlpInputs(ClipVisionModel model, IReadOnlyList<TaskDataset> datasets, int batchSize)
    {
        var layers = model.Layers;
        var captures = layers.Select(l => new TokenMeanCapture(l.Mlp)).ToList();
        var originals = layers.Select(l => l.Mlp).ToList();
        var labels = new List<long>();
        try
        {
            for (int i = 0; i < layers.Count; i++)
            {
                layers[i].Mlp = captures[i];
            }

            using var noGrad = no_grad();
            model.eval();
            for (int d = 0; d < datasets.Count; d++)
            {
                foreach (var batch in datasets[d].Batches(batchSize))
                {
                    using (batch)
                    using (NewDisposeScope())
                    {
                        model.GetImageFeatures(batch.Images);
                        labels.AddRange(Enumerable.Repeat((long)d, (int)batch.Count));
                    }
                }
            }

            return (captures.Select(cap => cat(cap.Captured, 0).DetachFromDisposeScope()).ToList(), tensor(labels.ToArray()).DetachFromDisposeScope());
        }
        finally
        {
            for (int i = 0; i < layers.Count; i++)
            {
                layers[i].Mlp = originals[i];
            }

            captures.ForEach(cap => cap.Dispose());
        }
    }

    private static double Probe(Tensor train, Tensor trainLabels, Tensor test, Tensor testLabels, int classes, out double[][] confusion)
    {
        using var scope = NewDisposeScope();
        var mean = train.mean([0], keepdim: true);
        var std = train.std(0, keepdim: true).clamp_min(1e-6);
        var x = ((train - mean) / std).to(ScalarType.Float32);
        var xt = ((test - mean) / std).to(ScalarType.Float32);
        var weight = nn.Parameter(zeros(x.shape[1], classes));
        var bias = nn.Parameter(zeros(classes));
        using var optimizer = optim.Adam([weight, bias], lr: 0.05, weight_decay: 1e-4);
        for (int step = 0; step < 500; step++)
        {
            using var inner = NewDisposeScope();
            optimizer.zero_grad();
            var loss = nn.functional.cross_entropy(x.matmul(weight) + bias, trainLabels);
            loss.backward();
            optimizer.step();
        }

        using var noGrad = no_grad();
        var predicted = (xt.matmul(weight) + bias).argmax(1);
        var truth = testLabels.data<long>().ToArray();
        var guesses = predicted.data<long>().ToArray();
        confusion = Enumerable.Range(0, classes).Select(_ => new double[classes]).ToArray();
        for (int i = 0; i < truth.Length; i++)
        {
            confusion[truth[i]][guesses[i]] += 1;
        }

        foreach (var row in confusion)
        {
            double total = row.Sum();
            for (int j = 0; j < classes && total > 0; j++)
            {
                row[j] = 100 * row[j] / total;
            }
        }

        return predicted.eq(testLabels).to(ScalarType.Float64).mean().item<double>();
    }

    /// <summary>
    /// Oracle routing: for task t, the task-arithmetic merge <paramref name="merged"/> with every MLP's weights replaced
    /// by expert t's (θ_0 + τ_t, the one-hot routing), evaluated on task t's test split (percent per task).
    /// </summary>
    private static List<double> Oracle(WorldZoo zoo, ClipVisionModel merged, IReadOnlyList<ClassificationTask> test, int batchSize) =>
        Oracle(zoo, merged, test, batchSize, key => key.Contains(".mlp.", StringComparison.Ordinal));

    /// <summary>
    /// Where the oracle's gap to the experts lies: oracle routing with, besides the MLPs, one more group of parameters
    /// taken from the image's own expert instead of the merge (attention, the layers' norms, the embeddings with the
    /// pre-norm, the post-norm with the projection); percent per task, by group. A group that closes most of the gap
    /// is where the tasks' vectors interfere.
    /// </summary>
    public static List<(string Group, List<double> Accuracy)> OracleAttribution(WorldZoo zoo, ClipVisionModel merged, IReadOnlyList<ClassificationTask> test, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(zoo);
        (string Name, Func<string, bool> Own)[] groups =
        [
            ("attention", k => k.Contains(".self_attn.", StringComparison.Ordinal)),
            ("layer norms", k => k.Contains(".layer_norm", StringComparison.Ordinal)),
            ("embeddings and pre-norm", k => k.Contains(".embeddings.", StringComparison.Ordinal) || k.Contains("pre_layrnorm", StringComparison.Ordinal)),
            ("post-norm and projection", k => k.Contains("post_layernorm", StringComparison.Ordinal) || k.Contains("visual_projection", StringComparison.Ordinal)),
        ];
        return groups.Select(g => (g.Name, Oracle(zoo, merged, test, batchSize, k => k.Contains(".mlp.", StringComparison.Ordinal) || g.Own(k)))).ToList();
    }

    private static List<double> Oracle(WorldZoo zoo, ClipVisionModel merged, IReadOnlyList<ClassificationTask> test, int batchSize, Func<string, bool> own)
    {
        var mergedWeights = merged.state_dict();
        var result = new List<double>();
        for (int t = 0; t < test.Count; t++)
        {
            var expertWeights = zoo.Experts[t].state_dict();
            var weights = mergedWeights.ToDictionary(kv => kv.Key, kv => own(kv.Key) ? expertWeights[kv.Key] : kv.Value);
            using var routed = ClipVisionModel.FromStateDict(zoo.Pretrained.Config, withProjection: true, weights);
            result.Add(100 * ModelEvaluator.Evaluate("Oracle routing", routed, [test[t]], batchSize).Scores[0].Accuracy);
        }

        return result;
    }

    private static List<double> Percent(EvaluationReport report) => report.Scores.Select(s => 100 * s.Accuracy).ToList();
}
