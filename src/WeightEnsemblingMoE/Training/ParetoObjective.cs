using Microsoft.Extensions.Logging;
using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Pareto;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// Pareto set learning for PWEMoE: each step draws a preference p ~ Dirichlet(α) over the tasks, sets it on the
/// <see cref="IPreferenceConditionedModel"/>, computes each task's cross-entropy on a labelled batch and minimises
/// their linear scalarization Σ_t p_t·CE_t, or, with EPO, T·Σ_t α_t·CE_t where α comes from <see cref="EpoSolver"/> given
/// the losses and the Gram matrix of the per-task gradients. The tasks must be in the model's task order.
/// </summary>
public sealed class ParetoObjective : AdaptationObjective
{
    /// <summary>How the task losses are combined. The default value is <see cref="ParetoScalarization.LinearScalarization"/>.</summary>
    public ParetoScalarization Scalarization { get; init; } = ParetoScalarization.LinearScalarization;

    /// <summary>The concentration α of the symmetric Dirichlet distribution preferences are drawn from, positive. The default value is 1 (uniform on the simplex).</summary>
    public double DirichletAlpha { get; init; } = 1.0;

    /// <summary>EPO's non-uniformity threshold ε, non-negative. The default value is 1e-4.</summary>
    public double EpoEpsilon { get; init; } = 1e-4;

    /// <summary><c>pareto-ls</c> or <c>pareto-epo</c>.</summary>
    public override string Name => Scalarization == ParetoScalarization.ExactParetoOptimal ? "pareto-epo" : "pareto-ls";

    /// <summary>
    /// The Gram matrix G·Gᵀ of the task losses' gradients with respect to <paramref name="parameters"/> (each row of G one
    /// task's flattened gradient), computed with the graph retained for the training step's backward pass.
    /// </summary>
    internal static double[,] GradientGram(IReadOnlyList<Tensor> losses, IReadOnlyList<Tensor> parameters)
    {
        using var scope = NewDisposeScope();
        var rows = new List<Tensor>(losses.Count);
        foreach (var taskLoss in losses)
        {
            var grads = autograd.grad([taskLoss], parameters.ToList(), retain_graph: true, allow_unused: true);
            var flat = grads.Select((g, i) => (g is null || g.IsInvalid ? zeros_like(parameters[i]) : g).detach().flatten().to_type(ScalarType.Float64)).ToList();
            rows.Add(cat(flat, 0));
        }

        var g = stack(rows);
        var gram = g.matmul(g.t()).cpu();
        int m = losses.Count;
        var values = gram.data<double>().ToArray();
        var result = new double[m, m];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < m; j++)
            {
                result[i, j] = values[(i * m) + j];
            }
        }

        return result;
    }

    internal override void Validate()
    {
        if (!Enum.IsDefined(Scalarization))
        {
            throw new ArgumentOutOfRangeException(nameof(Scalarization), Scalarization, "Unknown scalarization.");
        }

        if (!(DirichletAlpha > 0) || double.IsInfinity(DirichletAlpha))
        {
            throw new ArgumentOutOfRangeException(nameof(DirichletAlpha), DirichletAlpha, "The Dirichlet concentration must be positive and finite.");
        }

        if (!(EpoEpsilon >= 0) || double.IsInfinity(EpoEpsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(EpoEpsilon), EpoEpsilon, "EPO's ε must be non-negative and finite.");
        }
    }

    internal override void CheckTasks(IAdaptableModel model, IReadOnlyList<ClassificationTask> tasks)
    {
        if (model is not IPreferenceConditionedModel conditioned)
        {
            throw new ArgumentException(
                $"The {Name} objective trains a preference-conditioned model (PWEMoE, a ParetoUpscaledModel); {model.Method} is not one.", nameof(model));
        }

        if (tasks.Count != conditioned.TaskCount)
        {
            throw new ArgumentException($"The model merges {conditioned.TaskCount} tasks; {tasks.Count} were given.", nameof(tasks));
        }

        if (Scalarization == ParetoScalarization.ExactParetoOptimal && tasks.Count > EpoSolver.MaxTasks)
        {
            throw new ArgumentException($"EPO solves its linear programs for at most {EpoSolver.MaxTasks} tasks; {tasks.Count} were given.", nameof(tasks));
        }

        foreach (var task in tasks)
        {
            if (!task.Data.HasLabels || task.Data.Count == 0)
            {
                throw new ArgumentException($"Task '{task.Name}': dataset '{task.Data.Name}' must be labelled and not empty for Pareto training.", nameof(tasks));
            }
        }
    }

    internal override ObjectiveRun Start(IAdaptableModel model, IReadOnlyList<ClassificationTask> tasks, int seed, ILogger logger) =>
        new Run(this, (IPreferenceConditionedModel)model, tasks, seed, logger);

    private sealed class Run : ObjectiveRun
    {
        private readonly ParetoObjective objective;
        private readonly IPreferenceConditionedModel model;
        private readonly IReadOnlyList<ClassificationTask> tasks;
        private readonly DirichletSampler sampler;
        private readonly EpoSolver epo;

        public Run(ParetoObjective objective, IPreferenceConditionedModel model, IReadOnlyList<ClassificationTask> tasks, int seed, ILogger logger)
        {
            this.objective = objective;
            this.model = model;
            this.tasks = tasks;
            sampler = new DirichletSampler(tasks.Count, objective.DirichletAlpha, seed);
            epo = new EpoSolver(logger, objective.EpoEpsilon);
        }

        public override void SkipStep() => sampler.Sample();

        public override ObjectiveStep Backward(IReadOnlyList<TaskBatch> batches, IReadOnlyList<Parameter> parameters)
        {
            var preference = sampler.Sample();
            model.SetPreference(preference);
            int taskCount = tasks.Count;
            var losses = new List<Tensor>(taskCount);
            var values = new Dictionary<string, double>(StringComparer.Ordinal);
            var lossValues = new double[taskCount];
            for (int t = 0; t < taskCount; t++)
            {
                var logits = tasks[t].Logits(batches[t].Images, model.Features);
                var loss = nn.functional.cross_entropy(logits, batches[t].Labels!);
                double value = loss.to_type(ScalarType.Float64).item<double>();
                if (!double.IsFinite(value))
                {
                    throw new InvalidOperationException($"Task '{tasks[t].Name}': the cross-entropy is {value}; lower the learning rate.");
                }

                values[tasks[t].Name] = value;
                lossValues[t] = value;
                losses.Add(loss);
            }

            Tensor total;
            EpoMove? move = null;
            if (objective.Scalarization == ParetoScalarization.LinearScalarization)
            {
                total = losses[0] * preference[0];
                for (int t = 1; t < taskCount; t++)
                {
                    total = total + (losses[t] * preference[t]);
                }
            }
            else
            {
                var solution = epo.Solve(lossValues, GradientGram(losses, parameters), preference);
                move = solution.Move;
                total = losses[0] * (taskCount * solution.Alpha[0]);
                for (int t = 1; t < taskCount; t++)
                {
                    total = total + (losses[t] * (taskCount * solution.Alpha[t]));
                }
            }

            total.backward();
            return new ObjectiveStep(values, total.to_type(ScalarType.Float64).item<double>(), preference, move);
        }
    }
}
