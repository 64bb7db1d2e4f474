namespace WeightEnsembling.Tasks;

/// <summary>A view of some examples of a parent dataset, in a given order; it does not own the parent.</summary>
internal sealed class SubsetTaskDataset : TaskDataset
{
    private readonly TaskDataset _parent;
    private readonly long[] _indices;

    public SubsetTaskDataset(TaskDataset parent, long[] indices, string name)
        : base(name, parent.ClassCount)
    {
        _parent = parent;
        _indices = indices;
    }

    public override long Count => _indices.LongLength;

    public override bool HasLabels => _parent.HasLabels;

    protected override TaskBatch LoadExamples(long[] indices)
    {
        var mapped = new long[indices.Length];
        for (int i = 0; i < indices.Length; i++)
        {
            mapped[i] = _indices[indices[i]];
        }
        return _parent.GetBatch(mapped);
    }

    // The parent loads the batches, so a parent that loads ahead on background threads does so for its subsets too.
    protected override IEnumerable<TaskBatch> LoadBatches(IEnumerable<long[]> batches) =>
        _parent.LoadBatchesOf(batches.Select(Map));

    private long[] Map(long[] indices)
    {
        var mapped = new long[indices.Length];
        for (int i = 0; i < indices.Length; i++)
        {
            long index = indices[i];
            if (index < 0 || index >= _indices.LongLength)
            {
                throw new ArgumentOutOfRangeException(nameof(indices), index, $"Index {index} at position {i} is outside dataset '{Name}' of {_indices.LongLength} examples.");
            }
            mapped[i] = _indices[index];
        }
        return mapped;
    }
}
