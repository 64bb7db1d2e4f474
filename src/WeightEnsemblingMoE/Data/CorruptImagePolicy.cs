namespace WeightEnsembling.Data;

/// <summary>What a streaming dataset does with an example whose image cannot be decoded.</summary>
public enum CorruptImagePolicy
{
    /// <summary>Throw an <see cref="InvalidDataException"/> naming the file or row.</summary>
    Fail,

    /// <summary>Leave the example out of its batch (which becomes smaller) and count it in <see cref="StreamingImageDataset.SkippedCount"/>.</summary>
    Skip,
}
