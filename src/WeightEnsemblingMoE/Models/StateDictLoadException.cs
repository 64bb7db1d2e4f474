using WeightEnsembling.SafeTensors;
namespace WeightEnsembling.Models;

/// <summary>
/// A strict <see cref="StateDict.LoadInto"/> found missing, unexpected or mismatched keys; the module was left unchanged.
/// The message lists every problem.
/// </summary>
public sealed class StateDictLoadException : Exception
{
    /// <summary>Creates an exception with no details.</summary>
    public StateDictLoadException()
        : base("The state dict does not match the module.")
    {
        Report = new StateDictLoadReport([], [], [], []);
    }

    /// <summary>Creates an exception with a message only.</summary>
    /// <param name="message">The message.</param>
    public StateDictLoadException(string message)
        : base(message)
    {
        Report = new StateDictLoadReport([], [], [], []);
    }

    /// <summary>Creates an exception with a message and a cause.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public StateDictLoadException(string message, Exception? innerException)
        : base(message, innerException)
    {
        Report = new StateDictLoadReport([], [], [], []);
    }

    /// <summary>Creates an exception describing a report.</summary>
    /// <param name="moduleName">The module that was being loaded.</param>
    /// <param name="report">What did not match.</param>
    public StateDictLoadException(string moduleName, StateDictLoadReport report)
        : base($"The state dict does not match module '{moduleName}' (nothing was copied):{Environment.NewLine}{report?.DescribeProblems()}{LegacyHint(report)}")
    {
        ArgumentNullException.ThrowIfNull(report);
        Report = report;
    }

    /// <summary>A hint for state dicts of sparse task vectors saved in the layout before the bit mask (values + indices).</summary>
    private static string LegacyHint(StateDictLoadReport? report)
    {
        static bool Is(string key, string leaf) => key == leaf || key.EndsWith("." + leaf, StringComparison.Ordinal);
        return report is not null && report.UnexpectedKeys.Any(k => Is(k, "indices")) && report.MissingKeys.Any(k => Is(k, "mask"))
            ? $"{Environment.NewLine}Sparse task vectors: this state dict has the earlier layout ('values' + int32 'indices'); sparse storages now keep a 1-bit 'mask' per element instead. Rebuild the sparse task vectors from the experts (TaskVectorStorageOptions.Sparse) and save them again."
            : string.Empty;
    }

    /// <summary>What did not match.</summary>
    public StateDictLoadReport Report { get; }
}
