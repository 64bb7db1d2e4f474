using WeightEnsembling.Images;

namespace WeightEnsembling.Data;

/// <summary>How a <see cref="StreamingImageDataset"/> decodes and loads its batches.</summary>
public sealed class DataLoaderOptions
{
    /// <summary>
    /// The number of background threads that load batches ahead of the consumer; 0 loads each batch on the consumer's
    /// thread when it is asked for. The batches and their order do not depend on it. The default value is 2.
    /// </summary>
    public int LoaderThreads { get; set; } = 2;

    /// <summary>
    /// The number of loaded (or loading) batches queued ahead of the consumer, at least 1: with <see cref="LoaderThreads"/>
    /// it bounds the memory held by prefetching. The default value is 4.
    /// </summary>
    public int PrefetchBatches { get; set; } = 4;

    /// <summary>What happens to an example whose image cannot be decoded. The default value is <see cref="CorruptImagePolicy.Fail"/>.</summary>
    public CorruptImagePolicy CorruptImages { get; set; } = CorruptImagePolicy.Fail;

    /// <summary>The image decoder (pixel limit, EXIF orientation). The default value is <see cref="ImageDecoder.Default"/>.</summary>
    public ImageDecoder Decoder { get; set; } = ImageDecoder.Default;

    internal void Validate()
    {
        if (LoaderThreads < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(LoaderThreads), LoaderThreads, $"{nameof(LoaderThreads)} must be 0 or more.");
        }
        if (PrefetchBatches < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(PrefetchBatches), PrefetchBatches, $"{nameof(PrefetchBatches)} must be at least 1.");
        }
        if (!Enum.IsDefined(CorruptImages))
        {
            throw new ArgumentOutOfRangeException(nameof(CorruptImages), CorruptImages, $"{nameof(CorruptImages)} is not a defined policy.");
        }
        ArgumentNullException.ThrowIfNull(Decoder, nameof(Decoder));
    }
}
