using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// Task vectors of a 2-D tensor [out, in] stored as truncated SVD factors τ_t ≈ (U_t S_t) V_tᵀ, never rebuilt dense:
/// the factors of all tasks are concatenated along the rank dimension into the frozen buffers <c>u_s</c> [out, K] and
/// <c>v</c> [in, K] (K = Σ_t k_t), and <c>rank_tasks</c> [K] (int64) names the task of each rank-one component. The rank
/// k_t is fixed, or the smallest that keeps at least a fraction e of Σσ² (each task chooses its own).
/// </summary>
public sealed class LowRankTaskVectorStorage : TaskVectorStorage
{
    private readonly Tensor u_s;
    private readonly Tensor v;
    private readonly Tensor rank_tasks;
    private readonly int[] ranks;

    /// <summary>Factorises and stores <paramref name="taskVectors"/> (2-D, one per task, all of one shape; not modified).</summary>
    /// <param name="taskVectors">The task vectors τ_t, each [out, in].</param>
    /// <param name="rank">The fixed rank k (clamped to min(out, in)); exactly one of this and <paramref name="energyThreshold"/>.</param>
    /// <param name="energyThreshold">The kept fraction of Σσ², in (0, 1]; exactly one of this and <paramref name="rank"/>.</param>
    /// <param name="name">The module name. The default value is "low_rank".</param>
    public LowRankTaskVectorStorage(IReadOnlyList<Tensor> taskVectors, int? rank, double? energyThreshold, string name = "low_rank")
        : this(FactorizeAll(taskVectors, rank, energyThreshold), name)
    {
    }

    /// <summary>Concatenates per-task factors (U·S [out, k_t], V [in, k_t]); copies them, so the caller still owns them.</summary>
    internal LowRankTaskVectorStorage(IReadOnlyList<Tensor> us, IReadOnlyList<Tensor> v, long[] shape, string name)
        : base(name, us.Count, shape)
    {
        if (shape.Length != 2 || us.Count != v.Count)
        {
            throw new ArgumentException("Low-rank storage needs 2-D task vectors and one (U·S, V) pair per task.", nameof(shape));
        }

        ranks = us.Select(f => checked((int)f.shape[1])).ToArray();
        var taskOfRank = ranks.SelectMany((k, t) => Enumerable.Repeat((long)t, k)).ToArray();
        using (var scope = NewDisposeScope())
        {
            u_s = cat(us.ToArray(), 1).detach().contiguous().DetachFromDisposeScope();
            this.v = cat(v.ToArray(), 1).detach().contiguous().DetachFromDisposeScope();
            rank_tasks = tensor(taskOfRank, ScalarType.Int64, u_s.device).DetachFromDisposeScope();
        }

        RegisterComponents();
    }

    private LowRankTaskVectorStorage((List<Tensor> Us, List<Tensor> V, long[] Shape) parts, string name)
        : this(parts.Us, parts.V, parts.Shape, name)
    {
        foreach (var tensor in parts.Us.Concat(parts.V))
        {
            tensor.Dispose();
        }
    }

    /// <inheritdoc/>
    public override TaskVectorStorageKind Kind => TaskVectorStorageKind.LowRank;

    /// <inheritdoc/>
    public override long ElementCount => u_s.numel() + v.numel() + rank_tasks.numel();

    /// <inheritdoc/>
    public override long Bytes => (u_s.numel() * u_s.ElementSize) + (v.numel() * v.ElementSize) + (rank_tasks.numel() * rank_tasks.ElementSize);

    /// <summary>The rank k_t kept for each task.</summary>
    public IReadOnlyList<int> Ranks => ranks;

    /// <inheritdoc/>
    public override Tensor WeightedSum(Tensor routing)
    {
        using var scope = NewDisposeScope();
        var r = StorageArguments.Routing(routing, this, StoredPrecision.ComputeLike(u_s, routing));
        var scaled = StoredPrecision.Upcast(u_s, r.dtype) * r.index_select(0, rank_tasks);
        return scaled.matmul(StoredPrecision.Upcast(v, r.dtype).t()).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor BatchedWeightedSum(Tensor routing)
    {
        using var scope = NewDisposeScope();
        var r = StorageArguments.BatchedRouting(routing, this, StoredPrecision.ComputeLike(u_s, routing));
        var scaled = StoredPrecision.Upcast(u_s, r.dtype).unsqueeze(0) * r.index_select(1, rank_tasks).unsqueeze(1);
        return scaled.matmul(StoredPrecision.Upcast(v, r.dtype).t()).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>(x·V) [B, N, K], scaled per sample by R_{b, task(j)}, then ·(U S)ᵀ: cost B·N·K·(in + out), no delta materialised.</remarks>
    public override Tensor BatchedLinearDelta(Tensor input, Tensor routing)
    {
        StorageArguments.LinearInput(input, routing, this);
        using var scope = NewDisposeScope();
        var like = StoredPrecision.ComputeLike(u_s, input);
        var r = StorageArguments.Align(routing, like);
        var projected = StorageArguments.Align(input, like).matmul(StoredPrecision.Upcast(v, r.dtype));
        var scaled = projected * r.index_select(1, rank_tasks).unsqueeze(1);
        return scaled.matmul(StoredPrecision.Upcast(u_s, r.dtype).t()).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor ToDense(int task)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(task);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(task, TaskCount);
        using var scope = NewDisposeScope();
        long start = ranks.Take(task).Sum(k => (long)k);
        var dtype = StoredPrecision.IsHalf(u_s.dtype) ? ScalarType.Float32 : u_s.dtype;
        var result = StoredPrecision.Upcast(u_s.narrow(1, start, ranks[task]), dtype)
            .matmul(StoredPrecision.Upcast(v.narrow(1, start, ranks[task]), dtype).t());
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Truncated SVD of one [out, in] task vector: (U_k·S_k [out, k], V_k [in, k]).</summary>
    internal static (Tensor US, Tensor V) Factorize(Tensor taskVector, int? rank, double? energyThreshold)
    {
        using var scope = NewDisposeScope();
        var (u, s, vh) = linalg.svd(taskVector.detach(), fullMatrices: false);
        int full = checked((int)s.shape[0]);
        int k;
        if (rank is { } fixedRank)
        {
            k = Math.Min(fixedRank, full);
        }
        else
        {
            var energy = s.to(ScalarType.Float64).square();
            double total = energy.sum().item<double>();
            k = total == 0
                ? 0
                : Math.Min(full, checked((int)energy.cumsum(0).div(total).lt(energyThreshold!.Value).sum().item<long>()) + 1);
        }

        var us = (u.narrow(1, 0, k) * s.narrow(0, 0, k)).contiguous();
        var v = vh.narrow(0, 0, k).t().contiguous();
        return (us.MoveToOuterDisposeScope(), v.MoveToOuterDisposeScope());
    }

    private static (List<Tensor>, List<Tensor>, long[]) FactorizeAll(IReadOnlyList<Tensor> taskVectors, int? rank, double? energyThreshold)
    {
        ArgumentNullException.ThrowIfNull(taskVectors);
        new TaskVectorStorageOptions { Kind = TaskVectorStorageKind.LowRank, Rank = rank, EnergyThreshold = energyThreshold }.Validate();
        if (taskVectors.Count == 0)
        {
            throw new ArgumentException("At least one task vector is needed.", nameof(taskVectors));
        }

        var shape = taskVectors[0]?.shape ?? throw new ArgumentException("Task vector 0 is null.", nameof(taskVectors));
        if (shape.Length != 2)
        {
            throw new ArgumentException($"Low-rank storage needs 2-D task vectors; got shape [{string.Join(", ", shape)}].", nameof(taskVectors));
        }

        var us = new List<Tensor>();
        var v = new List<Tensor>();
        for (int t = 0; t < taskVectors.Count; t++)
        {
            var tau = taskVectors[t] ?? throw new ArgumentException($"Task vector {t} is null.", nameof(taskVectors));
            if (!tau.shape.SequenceEqual(shape))
            {
                throw new ArgumentException(
                    $"Task vector {t} has shape [{string.Join(", ", tau.shape)}]; task vector 0 has [{string.Join(", ", shape)}].", nameof(taskVectors));
            }

            var (a, b) = Factorize(tau, rank, energyThreshold);
            us.Add(a.DetachFromDisposeScope());
            v.Add(b.DetachFromDisposeScope());
        }

        return (us, v, shape);
    }
}
