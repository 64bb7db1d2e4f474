using WeightEnsembling.Evaluation;

namespace WeightEnsembling.Analysis;

/// <summary>
/// The loss (and accuracy) of θ_0 + λ_1 τ_1 + λ_2 τ_2 on a grid of (λ_1, λ_2), per task, with models marked on it; made by
/// <see cref="LossLandscapes.Compute"/> and drawn by the plotting package.
/// </summary>
public sealed record LossLandscape
{
    /// <summary>Creates a landscape from its grid points.</summary>
    /// <param name="lambda1Values">The λ_1 values of the grid, ascending.</param>
    /// <param name="lambda2Values">The λ_2 values of the grid, ascending.</param>
    /// <param name="tasks">The task names, in score order.</param>
    /// <param name="points">Every grid point, λ_1-major: point (i, j) at index i · |λ_2| + j.</param>
    /// <param name="markers">The models marked on the landscape.</param>
    /// <exception cref="ArgumentException">The points do not fill the grid in order, or a point lacks a task's loss.</exception>
    public LossLandscape(
        IReadOnlyList<double> lambda1Values,
        IReadOnlyList<double> lambda2Values,
        IReadOnlyList<string> tasks,
        IReadOnlyList<LossLandscapePoint> points,
        IReadOnlyList<LandscapeMarker> markers)
    {
        ArgumentNullException.ThrowIfNull(lambda1Values);
        ArgumentNullException.ThrowIfNull(lambda2Values);
        ArgumentNullException.ThrowIfNull(tasks);
        ArgumentNullException.ThrowIfNull(points);
        ArgumentNullException.ThrowIfNull(markers);
        if (lambda1Values.Count == 0 || lambda2Values.Count == 0 || tasks.Count == 0)
        {
            throw new ArgumentException("A loss landscape needs at least one λ_1 value, one λ_2 value and one task.", nameof(points));
        }
        if (points.Count != lambda1Values.Count * lambda2Values.Count)
        {
            throw new ArgumentException($"A {lambda1Values.Count}×{lambda2Values.Count} grid needs {lambda1Values.Count * lambda2Values.Count} points, got {points.Count}.", nameof(points));
        }
        for (int i = 0; i < lambda1Values.Count; i++)
        {
            for (int j = 0; j < lambda2Values.Count; j++)
            {
                var point = points[(i * lambda2Values.Count) + j];
                if (point.Lambda1 != lambda1Values[i] || point.Lambda2 != lambda2Values[j])
                {
                    throw new ArgumentException($"Point ({i}, {j}) is at ({point.Lambda1}, {point.Lambda2}), not at ({lambda1Values[i]}, {lambda2Values[j]}).", nameof(points));
                }
                if (point.Scores.Count != tasks.Count || point.Scores.Any(s => s.Loss is null))
                {
                    throw new ArgumentException($"Point ({point.Lambda1}, {point.Lambda2}) must hold a loss for each of the {tasks.Count} tasks.", nameof(points));
                }
            }
        }

        Lambda1Values = lambda1Values.ToArray();
        Lambda2Values = lambda2Values.ToArray();
        Tasks = tasks.ToArray();
        Points = points.ToArray();
        Markers = markers.ToArray();
    }

    /// <summary>The λ_1 values of the grid, ascending.</summary>
    public IReadOnlyList<double> Lambda1Values { get; }

    /// <summary>The λ_2 values of the grid, ascending.</summary>
    public IReadOnlyList<double> Lambda2Values { get; }

    /// <summary>The task names, in the order of each point's scores.</summary>
    public IReadOnlyList<string> Tasks { get; }

    /// <summary>Every grid point, λ_1-major: point (i, j) at index i · |λ_2| + j.</summary>
    public IReadOnlyList<LossLandscapePoint> Points { get; }

    /// <summary>The models marked on the landscape (pre-trained, fine-tuned, merged).</summary>
    public IReadOnlyList<LandscapeMarker> Markers { get; }

    /// <summary>The grid point at λ_1 = <see cref="Lambda1Values"/>[i], λ_2 = <see cref="Lambda2Values"/>[j].</summary>
    /// <param name="i">The λ_1 index.</param>
    /// <param name="j">The λ_2 index.</param>
    /// <returns>The point.</returns>
    public LossLandscapePoint PointAt(int i, int j)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(i);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(i, Lambda1Values.Count);
        ArgumentOutOfRangeException.ThrowIfNegative(j);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(j, Lambda2Values.Count);
        return Points[(i * Lambda2Values.Count) + j];
    }

    /// <summary>The loss surface as a matrix [λ_1 index, λ_2 index]: one task's mean cross-entropy, or the joint loss.</summary>
    /// <param name="task">The task index, or <see langword="null"/> for the joint loss (the sum over tasks).</param>
    /// <returns>A new matrix.</returns>
    public double[,] LossGrid(int? task = null)
    {
        CheckTask(task);
        return Grid(p => task is int t ? p.Scores[t].Loss!.Value : p.JointLoss);
    }

    /// <summary>One task's accuracy as a matrix [λ_1 index, λ_2 index].</summary>
    /// <param name="task">The task index.</param>
    /// <returns>A new matrix.</returns>
    public double[,] AccuracyGrid(int task)
    {
        CheckTask(task);
        return Grid(p => p.Scores[task].Accuracy);
    }

    /// <summary>A copy of this landscape with more markers.</summary>
    /// <param name="markers">The markers to add after the existing ones.</param>
    /// <returns>The new landscape.</returns>
    public LossLandscape WithMarkers(params IEnumerable<LandscapeMarker> markers)
    {
        ArgumentNullException.ThrowIfNull(markers);
        return new LossLandscape(Lambda1Values, Lambda2Values, Tasks, Points, [.. Markers, .. markers]);
    }

    private double[,] Grid(Func<LossLandscapePoint, double> value)
    {
        var grid = new double[Lambda1Values.Count, Lambda2Values.Count];
        for (int i = 0; i < Lambda1Values.Count; i++)
        {
            for (int j = 0; j < Lambda2Values.Count; j++)
            {
                grid[i, j] = value(PointAt(i, j));
            }
        }

        return grid;
    }

    private void CheckTask(int? task)
    {
        if (task is int t && (t < 0 || t >= Tasks.Count))
        {
            throw new ArgumentOutOfRangeException(nameof(task), t, $"The landscape has {Tasks.Count} task(s).");
        }
    }
}
