using TorchSharp;
using WeightEnsembling.Images;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Data;

/// <summary>
/// A <see cref="TaskDataset"/> that keeps its images encoded (files, parquet rows, raw bytes) and decodes and
/// preprocesses them per batch with a <see cref="ClipImageProcessor"/>, so memory holds only the batches in flight.
/// <see cref="TaskDataset.Batches"/> and <see cref="TaskDataset.Endless"/> load batches ahead on
/// <see cref="DataLoaderOptions.LoaderThreads"/> background threads into a bounded queue; the batches and their order
/// depend only on the seed, never on the number of threads.
/// </summary>
public abstract class StreamingImageDataset : TaskDataset
{
    private long _skipped;

    /// <summary>Initialises the dataset.</summary>
    /// <param name="name">The task name.</param>
    /// <param name="classCount">The number of classes.</param>
    /// <param name="processor">The preprocessing; it must give every image the same size (a centre crop or a fixed resize).</param>
    /// <param name="options">The loader options, or <see langword="null"/> for the defaults; they are copied.</param>
    /// <exception cref="ArgumentException">The processor's output size depends on the input.</exception>
    protected StreamingImageDataset(string name, int classCount, ClipImageProcessor processor, DataLoaderOptions? options)
        : base(name, classCount)
    {
        ArgumentNullException.ThrowIfNull(processor);
        if (processor.OutputHeight is null || processor.OutputWidth is null)
        {
            throw new ArgumentException($"Dataset '{name}': the processor must give every image the same size (do_center_crop, or a resize to a fixed height and width).", nameof(processor));
        }
        options ??= new DataLoaderOptions();
        options.Validate();
        Processor = processor;
        Options = new DataLoaderOptions
        {
            LoaderThreads = options.LoaderThreads,
            PrefetchBatches = options.PrefetchBatches,
            CorruptImages = options.CorruptImages,
            Decoder = options.Decoder,
        };
    }

    /// <summary>The preprocessing applied to each image.</summary>
    public ClipImageProcessor Processor { get; }

    /// <summary>The loader options (a copy of those given).</summary>
    public DataLoaderOptions Options { get; }

    /// <summary>The number of examples left out so far because their image could not be decoded (<see cref="CorruptImagePolicy.Skip"/>).</summary>
    public long SkippedCount => Interlocked.Read(ref _skipped);

    /// <summary>Reads the encoded image of an example and decodes it.</summary>
    /// <param name="index">The example index, in [0, <see cref="TaskDataset.Count"/>).</param>
    /// <returns>The decoded image.</returns>
    /// <exception cref="InvalidDataException">The image cannot be read or decoded; the message names the file or row.</exception>
    protected abstract RgbImage ReadImage(long index);

    /// <summary>The label of an example (only called when <see cref="TaskDataset.HasLabels"/>).</summary>
    /// <param name="index">The example index.</param>
    /// <returns>The label in [0, <see cref="TaskDataset.ClassCount"/>).</returns>
    protected abstract long LabelOf(long index);

    /// <inheritdoc />
    protected sealed override TaskBatch LoadExamples(long[] indices)
    {
        var images = new List<RgbImage>(indices.Length);
        var labels = new List<long>(indices.Length);
        foreach (long index in indices)
        {
            RgbImage image;
            try
            {
                image = ReadImage(index);
            }
            catch (InvalidDataException) when (Options.CorruptImages == CorruptImagePolicy.Skip)
            {
                Interlocked.Increment(ref _skipped);
                continue;
            }
            images.Add(Processor.ResizeAndCrop(image));
            if (HasLabels)
            {
                labels.Add(LabelOf(index));
            }
        }
        Tensor pixels = images.Count == 0
            ? zeros([0, 3, Processor.OutputHeight!.Value, Processor.OutputWidth!.Value], ScalarType.Float32, device: CPU)
            : Processor.Normalize(ClipImageProcessor.Stack(images));
        return new TaskBatch(pixels, HasLabels ? tensor(labels.ToArray(), ScalarType.Int64, device: CPU) : null);
    }

    /// <inheritdoc />
    protected override IEnumerable<TaskBatch> LoadBatches(IEnumerable<long[]> batches)
    {
        ArgumentNullException.ThrowIfNull(batches);
        var loaded = Options.LoaderThreads == 0
            ? batches.Select(GetBatch)
            : BatchPrefetcher.Run(batches, GetBatch, Options.LoaderThreads, Options.PrefetchBatches);
        foreach (var batch in loaded)
        {
            if (batch.Count == 0)
            {
                batch.Dispose(); // every example of the batch was skipped
                continue;
            }
            yield return batch;
        }
    }
}
