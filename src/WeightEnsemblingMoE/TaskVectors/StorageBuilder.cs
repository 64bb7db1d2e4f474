using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// Collects the task vectors of one parameter, one task at a time, compressing each as it arrives, and builds the
/// storage at the end. Kept tensors are detached from every dispose scope; <see cref="Dispose"/> frees what a failed
/// build leaves behind.
/// </summary>
internal abstract class StorageBuilder : IDisposable
{
    protected StorageBuilder(string parameterName, Tensor pretrained)
    {
        ModuleName = TaskVectorDictionary.ToModuleName(parameterName);
        Shape = pretrained.shape;
    }

    protected string ModuleName { get; }

    protected long[] Shape { get; }

    protected List<Tensor> Kept { get; } = [];

    public static StorageBuilder For(TaskVectorStorageOptions options, string parameterName, Tensor pretrained) =>
        options.Kind switch
        {
            TaskVectorStorageKind.Dense => new DenseBuilder(parameterName, pretrained),
            TaskVectorStorageKind.Sparse => new SparseBuilder(parameterName, pretrained, options.SparsityRatio),
            TaskVectorStorageKind.LowRank when pretrained.dim() == 2 =>
                new LowRankBuilder(parameterName, pretrained, options.Rank, options.EnergyThreshold),
            TaskVectorStorageKind.LowRank => new DenseBuilder(parameterName, pretrained),
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

    private sealed class DenseBuilder(string parameterName, Tensor pretrained) : StorageBuilder(parameterName, pretrained)
    {
        public override void Add(Tensor taskVector) => Keep(taskVector.clone());

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

    private sealed class SparseBuilder(string parameterName, Tensor pretrained, double sparsityRatio)
        : StorageBuilder(parameterName, pretrained)
    {
        public override void Add(Tensor taskVector)
        {
            var (values, indices) = SparseTaskVectorStorage.Compress(taskVector, sparsityRatio);
            Keep(values);
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

    private sealed class LowRankBuilder(string parameterName, Tensor pretrained, int? rank, double? energyThreshold)
        : StorageBuilder(parameterName, pretrained)
    {
        public override void Add(Tensor taskVector)
        {
            var (us, v) = LowRankTaskVectorStorage.Factorize(taskVector, rank, energyThreshold);
            Keep(us);
            Keep(v);
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
