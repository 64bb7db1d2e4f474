namespace WeightEnsembling.SafeTensors;

/// <summary>
/// Limits and checks applied when a safetensors file or a sharded checkpoint's index is opened. The format allows a
/// header of up to 100 MB; these limits keep the work and memory of reading one header a small multiple of its size and
/// turn absurd but well-formed headers into a <see cref="SafeTensorsFormatException"/> that names the limit. The defaults
/// are far above what real checkpoints use (see <c>docs/reliability.md</c>).
/// </summary>
public sealed record SafeTensorsReadOptions
{
    /// <summary>The options used when none are given.</summary>
    public static SafeTensorsReadOptions Default { get; } = new();

    /// <summary>
    /// The most tensors one file header (or one index's <c>weight_map</c>) may list. The default value is 250,000 (the
    /// largest real files list a few tens of thousands; each listed tensor costs about 700 bytes of memory while the
    /// header is parsed).
    /// </summary>
    public int MaxTensorCount { get; init; } = 250_000;

    /// <summary>
    /// The most dimensions a tensor's shape may have. The default value is 32 (real checkpoints use at most 5; several
    /// libtorch kernels stop at 25).
    /// </summary>
    public int MaxRank { get; init; } = 32;

    /// <summary>
    /// The longest tensor name or metadata key, in UTF-8 bytes. The default value is 4,096 (real names are under 200).
    /// </summary>
    public int MaxNameBytes { get; init; } = 4096;

    /// <summary>The most entries the header's <c>__metadata__</c> map (or an index's <c>metadata</c>) may have. The default value is 65,536.</summary>
    public int MaxMetadataEntries { get; init; } = 65_536;

    /// <summary>The largest sharded-checkpoint index file, in bytes. The default value is 100,000,000 (the header limit of the format).</summary>
    public long MaxIndexBytes { get; init; } = 100_000_000;

    /// <summary>
    /// Whether opening a sharded checkpoint whose index records each shard's SHA-256 (as <see cref="SafeTensorsWriter.SaveSharded"/>
    /// writes it) reads every shard in full to check it. Shard sizes recorded in the index are always checked. The default
    /// value is false.
    /// </summary>
    public bool VerifyShardHashes { get; init; }

    /// <summary>Checks that every limit is positive.</summary>
    /// <returns>These options, for chaining.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A limit is zero or negative; the message names it.</exception>
    public SafeTensorsReadOptions Validate()
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxTensorCount, nameof(MaxTensorCount));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxRank, nameof(MaxRank));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxNameBytes, nameof(MaxNameBytes));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxMetadataEntries, nameof(MaxMetadataEntries));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxIndexBytes, nameof(MaxIndexBytes));
        return this;
    }
}
