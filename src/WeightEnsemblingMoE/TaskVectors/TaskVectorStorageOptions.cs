using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>Options that choose how a <see cref="TaskVectorDictionary"/> stores its task vectors.</summary>
public sealed class TaskVectorStorageOptions
{
    /// <summary>The storage kind. The default value is <see cref="TaskVectorStorageKind.Dense"/>.</summary>
    public TaskVectorStorageKind Kind { get; set; } = TaskVectorStorageKind.Dense;

    /// <summary>
    /// For <see cref="TaskVectorStorageKind.Sparse"/>: the fraction p of each task's tensor pruned by magnitude, in [0, 1).
    /// The default value is 0.9.
    /// </summary>
    public double SparsityRatio { get; set; } = 0.9;

    /// <summary>
    /// For <see cref="TaskVectorStorageKind.LowRank"/>: the fixed rank k of the truncated SVD of each 2-D tensor (clamped to
    /// the tensor's smaller side). Exactly one of <see cref="Rank"/> and <see cref="EnergyThreshold"/> must be set for
    /// low-rank storage. The default value is <see langword="null"/>.
    /// </summary>
    public int? Rank { get; set; }

    /// <summary>
    /// For <see cref="TaskVectorStorageKind.LowRank"/>: keep the smallest rank whose singular values hold at least this
    /// fraction of Σσ², in (0, 1]. The default value is <see langword="null"/>.
    /// </summary>
    public double? EnergyThreshold { get; set; }

    /// <summary>
    /// The dtype the stored values (dense task vectors, kept sparse values, low-rank factors) are held in:
    /// <see cref="ScalarType.Float32"/>, <see cref="ScalarType.Float16"/> or <see cref="ScalarType.BFloat16"/>. The 16-bit
    /// dtypes halve the storage's bytes; the storages still compute in float32 (float64 when the operand is float64),
    /// upcasting each stored block where it is read (results, <see cref="TaskVectorStorage.ToDense"/> included, are float32;
    /// <see cref="TaskVectorStorage.Bytes"/> counts the 16-bit values). Float32 keeps the task vectors as computed, in the pre-trained
    /// tensors' dtype (float32 for every model this library loads). Sparse and low-rank storages compress in that dtype
    /// (quantile, SVD) and round the kept values or factors afterwards. The default value is
    /// <see cref="ScalarType.Float32"/>.
    /// </summary>
    public ScalarType DType { get; set; } = ScalarType.Float32;

    /// <summary>Dense storage options.</summary>
    public static TaskVectorStorageOptions Dense() => new() { Kind = TaskVectorStorageKind.Dense };

    /// <summary>Sparse storage options with sparsity ratio <paramref name="sparsityRatio"/>.</summary>
    /// <param name="sparsityRatio">The pruned fraction p, in [0, 1).</param>
    public static TaskVectorStorageOptions Sparse(double sparsityRatio) =>
        new() { Kind = TaskVectorStorageKind.Sparse, SparsityRatio = sparsityRatio };

    /// <summary>Low-rank storage options at fixed rank <paramref name="rank"/>.</summary>
    /// <param name="rank">The rank k, at least 1.</param>
    public static TaskVectorStorageOptions LowRank(int rank) =>
        new() { Kind = TaskVectorStorageKind.LowRank, Rank = rank };

    /// <summary>Low-rank storage options keeping at least <paramref name="energyThreshold"/> of the spectral energy.</summary>
    /// <param name="energyThreshold">The kept fraction of Σσ², in (0, 1].</param>
    public static TaskVectorStorageOptions LowRankByEnergy(double energyThreshold) =>
        new() { Kind = TaskVectorStorageKind.LowRank, EnergyThreshold = energyThreshold };

    /// <summary>A copy of these options.</summary>
    internal TaskVectorStorageOptions Copy() => new()
    {
        Kind = Kind,
        SparsityRatio = SparsityRatio,
        Rank = Rank,
        EnergyThreshold = EnergyThreshold,
        DType = DType,
    };

    /// <summary>Checks the options and throws an exception naming the first bad option.</summary>
    /// <exception cref="ArgumentException">An option is out of range or the combination is invalid.</exception>
    public void Validate()
    {
        if (DType is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
        {
            throw new ArgumentException(
                $"{nameof(DType)} = {DType} is not a task-vector storage dtype; use Float32, Float16 or BFloat16.", nameof(DType));
        }

        if (!Enum.IsDefined(Kind))
        {
            throw new ArgumentException($"{nameof(Kind)} = {Kind} is not a defined storage kind.", nameof(Kind));
        }

        if (Kind == TaskVectorStorageKind.Sparse && !(SparsityRatio >= 0 && SparsityRatio < 1))
        {
            throw new ArgumentException($"{nameof(SparsityRatio)} must lie in [0, 1); got {SparsityRatio}.", nameof(SparsityRatio));
        }

        if (Kind == TaskVectorStorageKind.LowRank)
        {
            if (Rank.HasValue == EnergyThreshold.HasValue)
            {
                throw new ArgumentException(
                    $"Low-rank storage needs exactly one of {nameof(Rank)} and {nameof(EnergyThreshold)}; got {nameof(Rank)} = {Rank?.ToString() ?? "null"}, {nameof(EnergyThreshold)} = {EnergyThreshold?.ToString() ?? "null"}.",
                    nameof(Rank));
            }

            if (Rank is < 1)
            {
                throw new ArgumentException($"{nameof(Rank)} must be at least 1; got {Rank}.", nameof(Rank));
            }

            if (EnergyThreshold is { } e && !(e > 0 && e <= 1))
            {
                throw new ArgumentException($"{nameof(EnergyThreshold)} must lie in (0, 1]; got {e}.", nameof(EnergyThreshold));
            }
        }
    }
}
