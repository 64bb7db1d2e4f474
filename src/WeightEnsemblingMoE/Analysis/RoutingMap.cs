using static TorchSharp.torch;

namespace WeightEnsembling.Analysis;

/// <summary>
/// The routing weights of an upscaled model averaged over one task's samples: a matrix [module, expert], one row per
/// mixture-of-experts module (in layer order), one column per expert. Made by <see cref="RoutingAnalysis.AverageRouting"/>.
/// </summary>
public sealed record RoutingMap
{
    /// <summary>Creates a routing map.</summary>
    /// <param name="task">The name of the task whose samples were routed.</param>
    /// <param name="modules">The module paths (rows), in layer order.</param>
    /// <param name="experts">The expert names (columns).</param>
    /// <param name="weights">The mean routing weights [module, expert]; copied.</param>
    /// <exception cref="ArgumentException">The matrix does not match the names, or holds NaN; the message says which.</exception>
    public RoutingMap(string task, IReadOnlyList<string> modules, IReadOnlyList<string> experts, double[,] weights)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(task);
        ArgumentNullException.ThrowIfNull(modules);
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(weights);
        if (weights.GetLength(0) != modules.Count || weights.GetLength(1) != experts.Count)
        {
            throw new ArgumentException($"The routing map of task '{task}' is {weights.GetLength(0)}×{weights.GetLength(1)}, but names {modules.Count} modules and {experts.Count} experts.", nameof(weights));
        }
        if (weights.Cast<double>().Any(double.IsNaN))
        {
            throw new ArgumentException($"The routing map of task '{task}' holds NaN.", nameof(weights));
        }

        Task = task;
        Modules = modules.ToArray();
        Experts = experts.ToArray();
        this.weights = (double[,])weights.Clone();
    }

    private readonly double[,] weights;

    /// <summary>The name of the task whose samples were routed.</summary>
    public string Task { get; }

    /// <summary>The module paths (rows), in layer order.</summary>
    public IReadOnlyList<string> Modules { get; }

    /// <summary>The expert names (columns).</summary>
    public IReadOnlyList<string> Experts { get; }

    /// <summary>The mean routing weight of module <paramref name="module"/> for expert <paramref name="expert"/>.</summary>
    /// <param name="module">The row.</param>
    /// <param name="expert">The column.</param>
    /// <returns>The weight.</returns>
    public double this[int module, int expert] => weights[module, expert];

    /// <summary>A copy of the matrix [module, expert].</summary>
    /// <returns>A new matrix.</returns>
    public double[,] ToArray() => (double[,])weights.Clone();

    /// <summary>
    /// Each module's mean routing vector [T] by module path, as <c>UpscaledModel.MergeAndUnload(routings)</c> takes them
    /// (merging at the average routing of this task). The caller owns the tensors.
    /// </summary>
    /// <returns>The routing vectors (float32, CPU).</returns>
    public Dictionary<string, Tensor> ToRoutingVectors()
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        for (int m = 0; m < Modules.Count; m++)
        {
            var row = new float[Experts.Count];
            for (int e = 0; e < row.Length; e++)
            {
                row[e] = (float)weights[m, e];
            }
            result[Modules[m]] = tensor(row);
        }

        return result;
    }
}
