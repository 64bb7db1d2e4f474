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
}
