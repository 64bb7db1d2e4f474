using WeightEnsembling.Clip;
using WeightEnsembling.Models;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Analysis;

/// <summary>
/// Loss landscapes in the plane of two task vectors: θ(λ_1, λ_2) = θ_0 + λ_1 τ_1 + λ_2 τ_2 with τ_t = θ_t − θ_0, as in
/// the task-arithmetic and WEMoE papers, and the projection of merged models onto that plane.
/// </summary>
public static class LossLandscapes
{
    /// <summary>The label of the pre-trained model's marker, at (0, 0).</summary>
    public const string PretrainedLabel = "pre-trained";

    /// <summary>
    /// Evaluates θ_0 + λ_1 τ_1 + λ_2 τ_2 on every task at every grid point. One model is built with
    /// <see cref="ModelMerging.WithWeights"/> and its weights are overwritten in place for each point; the inputs are not
    /// modified. Markers are added for the pre-trained model (0, 0) and the two fine-tuned models (1, 0) and (0, 1).
    /// </summary>
    /// <param name="pretrained">θ_0.</param>
    /// <param name="finetuned1">θ_1, whose task vector is the λ_1 axis.</param>
    /// <param name="finetuned2">θ_2, whose task vector is the λ_2 axis.</param>
    /// <param name="tasks">The tasks: each one's labelled test data and classification head (applied to the model's image features).</param>
    /// <param name="options">The grid and batch size; <see langword="null"/> for the defaults.</param>
    /// <param name="progress">Receives each grid point when it is evaluated, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    /// <returns>The landscape.</returns>
    /// <exception cref="ArgumentException">No task, a duplicate task name, or models whose tensors differ; the message names them.</exception>
    public static LossLandscape Compute(
        ClipVisionModel pretrained,
        ClipVisionModel finetuned1,
        ClipVisionModel finetuned2,
        IReadOnlyList<ClassificationTask> tasks,
        LossLandscapeOptions? options = null,
        IProgress<LossLandscapePoint>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(finetuned1);
        ArgumentNullException.ThrowIfNull(finetuned2);
        ArgumentNullException.ThrowIfNull(tasks);
        options ??= new LossLandscapeOptions();
        var lambdas = options.AxisValues();
        if (tasks.Count == 0)
        {
            throw new ArgumentException("A loss landscape needs at least one task.", nameof(tasks));
        }
        for (int t = 0; t < tasks.Count; t++)
        {
            if (tasks[t] is null)
            {
                throw new ArgumentException($"Task {t} is null.", nameof(tasks));
            }
        }
        var duplicate = tasks.GroupBy(t => t.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Task '{duplicate.Key}' appears {duplicate.Count()} times; give each task its own name.", nameof(tasks));
        }

        var modelPool = ModelPool.FromModels(pretrained, [finetuned1, finetuned2], [nameof(finetuned1), nameof(finetuned2)]);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (theta0, taskVectors) = PlaneOf(modelPool);
        var (tau1, tau2) = (taskVectors[0], taskVectors[1]);
        using var model = modelPool.BuildModel(theta0);
        var target = model.state_dict();

        var points = new List<LossLandscapePoint>(lambdas.Length * lambdas.Length);
        foreach (double lambda1 in lambdas)
        {
            foreach (double lambda2 in lambdas)
            {
                cancellationToken.ThrowIfCancellationRequested();
                foreach (var (name, weight) in theta0)
                {
                    using var pointScope = NewDisposeScope();
                    target[name].copy_(weight + (tau1[name] * lambda1) + (tau2[name] * lambda2));
                }

                var scores = tasks
                    .Select(t => TaskEvaluator.Evaluate(images => t.Head.forward(model.GetImageFeatures(images)), t.Data, options.BatchSize, cancellationToken))
                    .ToList();
                var point = new LossLandscapePoint(lambda1, lambda2, scores);
                progress?.Report(point);
                points.Add(point);
            }
        }

        string Name(int t) => tasks.Count == 2 ? tasks[t].Name : $"task {t + 1}";
        LandscapeMarker[] markers =
        [
            new(PretrainedLabel, 0, 0, 0),
            new($"fine-tuned ({Name(0)})", 1, 0, 0),
            new($"fine-tuned ({Name(1)})", 0, 1, 0),
        ];
        return new LossLandscape(lambdas, lambdas, tasks.Select(t => t.Name).ToList(), points, markers);
    }

    /// <summary>
    /// Places a merged model on the (τ_1, τ_2) plane: the least-squares (λ_1, λ_2) minimising
    /// ‖(θ − θ_0) − λ_1 τ_1 − λ_2 τ_2‖ over every floating-point tensor, with the relative residual that tells how far the
    /// model lies off the plane (e.g. TIES trims and re-signs, WEMoE routes each layer differently).
    /// </summary>
    /// <param name="pretrained">θ_0.</param>
    /// <param name="finetuned1">θ_1.</param>
    /// <param name="finetuned2">θ_2.</param>
    /// <param name="merged">The model θ to place.</param>
    /// <param name="label">The marker's label.</param>
    /// <returns>The marker, with <see cref="LandscapeMarker.Residual"/> set.</returns>
    /// <exception cref="ArgumentException">The models' tensors differ, or τ_1 and τ_2 are parallel (no plane).</exception>
    public static LandscapeMarker Project(ClipVisionModel pretrained, ClipVisionModel finetuned1, ClipVisionModel finetuned2, ClipVisionModel merged, string label)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(finetuned1);
        ArgumentNullException.ThrowIfNull(finetuned2);
        ArgumentNullException.ThrowIfNull(merged);
        ArgumentException.ThrowIfNullOrWhiteSpace(label);

        var modelPool = ModelPool.FromModels(pretrained, [finetuned1, finetuned2, merged], [nameof(finetuned1), nameof(finetuned2), nameof(merged)]);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (theta0, taskVectors) = PlaneOf(modelPool);
        var (tau1, tau2, delta) = (taskVectors[0], taskVectors[1], taskVectors[2]);

        double a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0, dd = 0;
        foreach (var name in theta0.Keys)
        {
            using var inner = NewDisposeScope();
            var t1 = tau1[name].to_type(ScalarType.Float64).flatten();
            var t2 = tau2[name].to_type(ScalarType.Float64).flatten();
            var d = delta[name].to_type(ScalarType.Float64).flatten();
            a11 += t1.dot(t1).item<double>();
            a12 += t1.dot(t2).item<double>();
            a22 += t2.dot(t2).item<double>();
            b1 += t1.dot(d).item<double>();
            b2 += t2.dot(d).item<double>();
            dd += d.dot(d).item<double>();
        }

        double determinant = (a11 * a22) - (a12 * a12);
        if (!(determinant > 1e-12 * Math.Max(a11 * a22, double.Epsilon)))
        {
            throw new ArgumentException("The task vectors τ_1 and τ_2 are parallel or zero: they span no plane to project onto.", nameof(finetuned2));
        }
        double lambda1 = ((a22 * b1) - (a12 * b2)) / determinant;
        double lambda2 = ((a11 * b2) - (a12 * b1)) / determinant;
        // ‖d − λ_1 τ_1 − λ_2 τ_2‖² = ‖d‖² − λ·b at the least-squares solution.
        double residualSquared = Math.Max(0, dd - (lambda1 * b1) - (lambda2 * b2));
        double residual = dd > 0 ? Math.Sqrt(residualSquared / dd) : 0;
        return new LandscapeMarker(label, lambda1, lambda2, residual);
    }

    // θ_0 and every τ_t of the pool, kept in the caller's dispose scope (the pool's own handles are released expert by expert).
    private static (Dictionary<string, Tensor> Theta0, List<Dictionary<string, Tensor>> TaskVectors) PlaneOf(ModelPool modelPool)
    {
        var theta0 = modelPool.LoadPretrained();
        var taskVectors = modelPool.TaskVectors(theta0)
            .Select(tau => tau.ToDictionary(t => t.Key, t => t.Value.clone(), StringComparer.Ordinal))
            .ToList();
        return (theta0, taskVectors);
    }
}
