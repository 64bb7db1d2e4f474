namespace WeightEnsembling.Interop;

/// <summary>
/// A <c>torch.save</c> checkpoint cannot be read: the file is not a valid zip archive, its pickle is truncated or
/// corrupt, it uses the legacy (pre-1.6) format, or it references a Python global outside the plain-tensor-data
/// allow-list (which could run code when unpickled by Python). The message names the file and, where there is one, the
/// global.
/// </summary>
public sealed class TorchCheckpointFormatException : Exception
{
    /// <summary>Creates an exception with no details.</summary>
    public TorchCheckpointFormatException()
        : this("The torch.save checkpoint cannot be read.")
    {
    }

    /// <summary>Creates an exception with a message only.</summary>
    /// <param name="message">The message.</param>
    public TorchCheckpointFormatException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and a cause.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public TorchCheckpointFormatException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates an exception naming the file, the offending global (if any) and what is wrong.</summary>
    /// <param name="filePath">The file at fault.</param>
    /// <param name="forbiddenGlobal">The <c>module.name</c> of a global outside the allow-list, or null.</param>
    /// <param name="problem">What is wrong.</param>
    /// <param name="innerException">The cause, if any.</param>
    public TorchCheckpointFormatException(string filePath, string? forbiddenGlobal, string problem, Exception? innerException = null)
        : base($"Cannot read the torch.save checkpoint '{filePath}': {problem}", innerException)
    {
        FilePath = filePath;
        ForbiddenGlobal = forbiddenGlobal;
    }

    /// <summary>The file at fault, or null when not known.</summary>
    public string? FilePath { get; }

    /// <summary>The <c>module.name</c> of the refused global, or null when the fault is not a forbidden global.</summary>
    public string? ForbiddenGlobal { get; }
}
