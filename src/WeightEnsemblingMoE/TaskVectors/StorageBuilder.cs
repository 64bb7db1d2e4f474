using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// Collects the task vectors of one parameter, one task at a time, compressing each as it arrives, and builds the
/// storage at the end. Kept tensors are detached from every dispose scope; <see cref="Dispose"/> frees what a failed
/// build leaves behind.
/// </summary>
internal abstract class StorageBuilder : IDisposable
{
    protected StorageBuilder(string parameterName, Tensor pretrained, ScalarType storedType)
    {
        ModuleName = TaskVectorDictionary.ToModuleName(parameterName);
        Shape = pretrained.shape;
        StoredType = StoredPrecision.IsHalf(storedType) ? storedType : null;
    }

    /// <summary>The 16-bit dtype kept tensors are rounded to, or null to keep them as computed.</summary>
    protected ScalarType? StoredType { get; }

    protected string ModuleName { get; }

    protected long[] Shape { get; }

    protected List<Tensor> Kept { get; } = [];

    public static StorageBuilder For(TaskVectorStorageOptions options, string parameterName, Tensor pretrained) =>
        options.Kind switch
        {
            TaskVectorStorageKind.Dense => new DenseBuilder(parameterName, pretrained, options.DType),
            TaskVectorStorageKind.Sparse => new SparseBuilder(parameterName, pretrained, options.DType, options.SparsityRatio),
            TaskVectorStorageKind.LowRank when pretrained.dim() == 2 =>
                new LowRankBuilder(parameterName, pretrained, options.DType, options.Rank, options.EnergyThreshold),
            TaskVectorStorageKind.LowRank => new DenseBuilder(parameterName, pretrained, options.DType),
            _ => throw new ArgumentOutOfRangeException(nameof(options), options.Kind, "Unknown storage kind."),
        };

    /// <summary>Adds the next task's vector (not disposed; the caller's scope owns it).</summary>
    public abstract void Add(Tensor taskVector);

    /// <summary>Builds the storage; it takes ownership of the kept tensors.</summary>
    public abstract TaskVectorStorage Build();

    public void Dispose()
    {
        foreach (var tensor in Kept)
        {
            tensor.Dispose();
        }

        Kept.Clear();
    }

    protected void Keep(Tensor tensor) => Kept.Add(tensor.DetachFromDisposeScope());

    /// <summary><paramref name="tensor"/> rounded to <see cref="StoredType"/> (a new tensor in the current scope), or itself.</summary>
    protected Tensor Round(Tensor tensor) => StoredType is { } dtype ? tensor.to(dtype) : tensor;

    private sealed class DenseBuilder(string parameterName, Tensor pretrained, ScalarType storedType)
        : StorageBuilder(parameterName, pretrained, storedType)
    {
        public override void Add(Tensor taskVector) => Keep(StoredType is { } dtype ? taskVector.to(dtype) : taskVector.clone());

        public override TaskVectorStorage Build()
        {
            Tensor stacked;
            using (var scope = NewDisposeScope())
            {
                stacked = stack(Kept).DetachFromDisposeScope();
            }

            Dispose();
            return new DenseTaskVectorStorage(stacked, ModuleName, owned: true);
        }
    }

    private sealed class SparseBuilder(string parameterName, Tensor pretrained, ScalarType storedType, double sparsityRatio)
        : StorageBuilder(parameterName, pretrained, storedType)
    {
        public override void Add(Tensor taskVector)
        {
            var (values, indices) = SparseTaskVectorStorage.Compress(taskVector, sparsityRatio);
            Keep(Round(values));
            Keep(indices);
        }

        public override TaskVectorStorage Build()
        {
            var values = Kept.Where((_, i) => i % 2 == 0).ToList();
            var indices = Kept.Where((_, i) => i % 2 == 1).ToList();
            var storage = new SparseTaskVectorStorage(values, indices, Shape, ModuleName);
            Dispose();
            return storage;
        }
    }

    private sealed class LowRankBuilder(string parameterName, Tensor pretrained, ScalarType storedType, int? rank, double? energyThreshold)
        : StorageBuilder(parameterName, pretrained, storedType)
    {
        public override void Add(Tensor taskVector)
        {
            var (us, v) = LowRankTaskVectorStorage.Factorize(taskVector, rank, energyThreshold);
            Keep(Round(us));
            Keep(Round(v));
        }

        public override TaskVectorStorage Build()
        {
            var us = Kept.Where((_, i) => i % 2 == 0).ToList();
            var v = Kept.Where((_, i) => i % 2 == 1).ToList();
            var storage = new LowRankTaskVectorStorage(us, v, Shape, ModuleName);
            Dispose();
            return storage;
        }
    }
}
