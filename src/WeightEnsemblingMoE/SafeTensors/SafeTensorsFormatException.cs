namespace WeightEnsembling.SafeTensors;

/// <summary>
/// A safetensors file (or a sharded checkpoint's index) breaks a rule of the format. The message names the file, the
/// tensor where there is one, and the rule.
/// </summary>
public sealed class SafeTensorsFormatException : Exception
{
    /// <summary>Creates an exception with no details.</summary>
    public SafeTensorsFormatException()
        : this("The safetensors data is malformed.")
    {
    }

    /// <summary>Creates an exception with a message only.</summary>
    /// <param name="message">The message.</param>
    public SafeTensorsFormatException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and a cause.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public SafeTensorsFormatException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates an exception naming the file, the tensor and the rule.</summary>
    /// <param name="filePath">The file at fault.</param>
    /// <param name="tensorName">The tensor at fault, or null when the fault is not one tensor's.</param>
    /// <param name="rule">What is wrong.</param>
    /// <param name="innerException">The cause, if any.</param>
    public SafeTensorsFormatException(string filePath, string? tensorName, string rule, Exception? innerException = null)
        : base(Compose(filePath, tensorName, rule), innerException)
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    /// <summary>The file at fault, or null when not known.</summary>
    public string? FilePath { get; }

    /// <summary>The tensor at fault, or null when the fault is not one tensor's.</summary>
    public string? TensorName { get; }

    private static string Compose(string filePath, string? tensorName, string rule) =>
        tensorName is null
            ? $"Invalid safetensors file '{filePath}': {rule}"
            : $"Invalid safetensors file '{filePath}', tensor '{tensorName}': {rule}";
}
