using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Tasks;

/// <summary>
/// The examples of one task: images [N, C, H, W] float32 and, optionally, labels [N] int64 in [0, <see cref="ClassCount"/>).
/// Unlabelled datasets serve test-time adaptation. Batches are drawn through <see cref="Batches"/> (one pass) or
/// <see cref="Endless"/> (training); every batch is owned by the caller.
/// </summary>
public abstract class TaskDataset : IDisposable
{
    /// <summary>Initialises the dataset's name and class count.</summary>
    /// <param name="name">The task name (e.g. <c>mnist</c>).</param>
    /// <param name="classCount">The number of classes, at least 1.</param>
    protected TaskDataset(string name, int classCount)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        Name = name;
        ClassCount = classCount;
    }

    /// <summary>The task name.</summary>
    public string Name { get; }

    /// <summary>The number of classes.</summary>
    public int ClassCount { get; }

    /// <summary>The number of examples.</summary>
    public abstract long Count { get; }

    /// <summary>Whether the examples carry labels.</summary>
    public abstract bool HasLabels { get; }

    /// <summary>Loads the examples at <paramref name="indices"/> as a new batch owned by the caller.</summary>
    /// <param name="indices">Example indices in [0, <see cref="Count"/>), in the order wanted.</param>
    /// <returns>The batch; its tensors are detached from every dispose scope.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An index lies outside [0, <see cref="Count"/>).</exception>
    public TaskBatch GetBatch(IReadOnlyList<long> indices)
    {
        ArgumentNullException.ThrowIfNull(indices);
        long count = Count;
        var array = new long[indices.Count];
        for (int i = 0; i < array.Length; i++)
        {
            long index = indices[i];
            if (index < 0 || index >= count)
            {
                throw new ArgumentOutOfRangeException(nameof(indices), index, $"Index {index} at position {i} is outside dataset '{Name}' of {count} examples.");
            }
            array[i] = index;
        }
        using var scope = NewDisposeScope();
        var batch = LoadExamples(array);
        batch.Images.DetachFromDisposeScope();
        batch.Labels?.DetachFromDisposeScope();
        return batch;
    }

    /// <summary>One pass over the dataset in batches of <paramref name="batchSize"/> (the last one may be smaller).</summary>
    /// <param name="batchSize">The number of examples per batch, at least 1.</param>
    /// <param name="shuffle">Whether to visit the examples in a random order drawn from <paramref name="seed"/>.</param>
    /// <param name="seed">The seed of the shuffle; ignored when <paramref name="shuffle"/> is <see langword="false"/>.</param>
    /// <returns>The batches, each owned by the caller.</returns>
    public IEnumerable<TaskBatch> Batches(int batchSize, bool shuffle = false, int seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        return BatchesCore(batchSize, shuffle, seed);
    }

    /// <summary>
    /// An endless stream of batches for training: each epoch visits every example once in a new random order drawn
    /// from one generator seeded with <paramref name="seed"/>, so the same seed gives the same sequence of batches. The
    /// last batch of an epoch may be smaller.
    /// </summary>
    /// <param name="batchSize">The number of examples per batch, at least 1.</param>
    /// <param name="seed">The seed of the shuffling generator.</param>
    /// <returns>The never-ending batches, each owned by the caller.</returns>
    /// <exception cref="InvalidOperationException">The dataset is empty.</exception>
    public IEnumerable<TaskBatch> Endless(int batchSize, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        if (Count == 0)
        {
            throw new InvalidOperationException($"Dataset '{Name}' is empty: it cannot yield batches endlessly.");
        }
        return EndlessCore(batchSize, seed);
    }

    /// <summary>
    /// A view of the examples at <paramref name="indices"/> (in that order). The view reads from this dataset, which
    /// must outlive it; disposing the view leaves this dataset alone.
    /// </summary>
    /// <param name="indices">Example indices in [0, <see cref="Count"/>).</param>
    /// <param name="name">The subset's name, or <see langword="null"/> to keep this dataset's name.</param>
    /// <returns>The subset, with this dataset's class count.</returns>
    public TaskDataset Subset(IReadOnlyList<long> indices, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(indices);
        long count = Count;
        var array = new long[indices.Count];
        for (int i = 0; i < array.Length; i++)
        {
            long index = indices[i];
            if (index < 0 || index >= count)
            {
                throw new ArgumentOutOfRangeException(nameof(indices), index, $"Index {index} at position {i} is outside dataset '{Name}' of {count} examples.");
            }
            array[i] = index;
        }
        return new SubsetTaskDataset(this, array, name ?? Name);
    }

    /// <summary>
    /// Splits the dataset at random into disjoint parts (e.g. train/validation/test) whose sizes follow
    /// <paramref name="fractions"/>; together the parts hold every example exactly once.
    /// </summary>
    /// <param name="fractions">The positive fraction of each part; they must sum to 1.</param>
    /// <param name="seed">The seed of the random permutation.</param>
    /// <returns>One <see cref="Subset"/> per fraction, in order.</returns>
    /// <exception cref="ArgumentException">A fraction is not positive, they do not sum to 1, or a part would be empty.</exception>
    public IReadOnlyList<TaskDataset> Split(IReadOnlyList<double> fractions, int seed)
    {
        ArgumentNullException.ThrowIfNull(fractions);
        if (fractions.Count == 0)
        {
            throw new ArgumentException("At least one fraction is needed.", nameof(fractions));
        }
        double sum = 0;
        for (int i = 0; i < fractions.Count; i++)
        {
            if (!(fractions[i] > 0) || double.IsInfinity(fractions[i]))
            {
                throw new ArgumentException($"Fraction {i} is {fractions[i]}; every fraction must be positive and finite.", nameof(fractions));
            }
            sum += fractions[i];
        }
        if (Math.Abs(sum - 1) > 1e-6)
        {
            throw new ArgumentException($"The fractions sum to {sum}, not 1.", nameof(fractions));
        }

        long count = Count;
        long[] permutation = Permutation(count, seed, generator: null);
        var parts = new List<TaskDataset>(fractions.Count);
        long start = 0;
        double cumulative = 0;
        for (int i = 0; i < fractions.Count; i++)
        {
            cumulative += fractions[i];
            long end = i == fractions.Count - 1 ? count : Math.Min(count, (long)Math.Round(cumulative * count));
            if (end <= start)
            {
                throw new ArgumentException($"Fraction {i} ({fractions[i]}) of dataset '{Name}' with {count} examples gives an empty part.", nameof(fractions));
            }
            parts.Add(new SubsetTaskDataset(this, permutation[(int)start..(int)end], Name));
            start = end;
        }
        return parts;
    }

    /// <summary>Disposes the dataset's tensors.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Loads the examples at <paramref name="indices"/>, which the caller has checked.</summary>
    /// <param name="indices">Valid example indices, in the order wanted.</param>
    /// <returns>A new batch; the caller detaches it from the dispose scope it opens around this call.</returns>
    protected abstract TaskBatch LoadExamples(long[] indices);

    /// <summary>Releases the dataset's tensors.</summary>
    /// <param name="disposing"><see langword="true"/> when called from <see cref="Dispose()"/>.</param>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <summary>
    /// Loads, in order, the batches whose example indices <paramref name="batches"/> yields (indices not yet checked);
    /// <see cref="Batches"/> and <see cref="Endless"/> draw through it. The default loads each batch with
    /// <see cref="GetBatch"/> when it is asked for. A dataset that reads files may override it to load ahead on
    /// background threads, provided it yields the same batches in the same order and disposes the batches it loaded but
    /// did not hand out when the enumeration is disposed.
    /// </summary>
    /// <param name="batches">The example indices of each batch, in order; enumerated at most once.</param>
    /// <returns>The batches, each owned by the caller.</returns>
    protected virtual IEnumerable<TaskBatch> LoadBatches(IEnumerable<long[]> batches)
    {
        ArgumentNullException.ThrowIfNull(batches);
        foreach (var indices in batches)
        {
            yield return GetBatch(indices);
        }
    }

    /// <summary>Gives a view (e.g. a subset) access to this dataset's <see cref="LoadBatches"/>.</summary>
    internal IEnumerable<TaskBatch> LoadBatchesOf(IEnumerable<long[]> batches) => LoadBatches(batches);

    private IEnumerable<TaskBatch> BatchesCore(int batchSize, bool shuffle, int seed)
    {
        foreach (var batch in LoadBatches(BatchIndices(batchSize, shuffle, seed)))
        {
            yield return batch;
        }
    }

    private IEnumerable<long[]> BatchIndices(int batchSize, bool shuffle, int seed)
    {
        long count = Count;
        long[] order = shuffle ? Permutation(count, seed, generator: null) : Enumerable.Range(0, checked((int)count)).Select(i => (long)i).ToArray();
        for (int start = 0; start < order.Length; start += batchSize)
        {
            yield return order[start..Math.Min(order.Length, start + batchSize)];
        }
    }

    private IEnumerable<TaskBatch> EndlessCore(int batchSize, int seed)
    {
        foreach (var batch in LoadBatches(EndlessIndices(batchSize, seed)))
        {
            yield return batch;
        }
    }

    private IEnumerable<long[]> EndlessIndices(int batchSize, int seed)
    {
        long count = Count;
        using var generator = new Generator(unchecked((ulong)seed));
        while (true)
        {
            long[] order = Permutation(count, seed, generator);
            for (int start = 0; start < order.Length; start += batchSize)
            {
                yield return order[start..Math.Min(order.Length, start + batchSize)];
            }
        }
    }

    private static long[] Permutation(long count, int seed, Generator? generator)
    {
        using var scope = NewDisposeScope();
        if (generator is null)
        {
            using var own = new Generator(unchecked((ulong)seed));
            return randperm(count, generator: own, dtype: ScalarType.Int64, device: CPU).data<long>().ToArray();
        }
        return randperm(count, generator: generator, dtype: ScalarType.Int64, device: CPU).data<long>().ToArray();
    }
}
