using WeightEnsembling.SafeTensors;
namespace WeightEnsembling.Models;

/// <summary>What <see cref="StateDict.LoadInto"/> matched, copied and could not use.</summary>
/// <param name="LoadedKeys">The keys whose values were copied into the module, sorted.</param>
/// <param name="MissingKeys">The module's keys with no supplied tensor, sorted.</param>
/// <param name="UnexpectedKeys">The supplied keys the module does not have, sorted.</param>
/// <param name="ShapeMismatches">The keys present on both sides with different shapes (not copied), sorted by key.</param>
public sealed record StateDictLoadReport(
    IReadOnlyList<string> LoadedKeys,
    IReadOnlyList<string> MissingKeys,
    IReadOnlyList<string> UnexpectedKeys,
    IReadOnlyList<StateDictShapeMismatch> ShapeMismatches)
{
    /// <summary>True when every key matched with the right shape: nothing missing, unexpected or mismatched.</summary>
    public bool IsExactMatch => MissingKeys.Count == 0 && UnexpectedKeys.Count == 0 && ShapeMismatches.Count == 0;

    /// <summary>A readable list of every problem, one per line (empty when <see cref="IsExactMatch"/>).</summary>
    /// <returns>The description.</returns>
    public string DescribeProblems()
    {
        var lines = new List<string>();
        lines.AddRange(MissingKeys.Select(k => $"missing key: {k}"));
        lines.AddRange(UnexpectedKeys.Select(k => $"unexpected key: {k}"));
        lines.AddRange(ShapeMismatches.Select(m => $"shape mismatch: {m}"));
        return string.Join(Environment.NewLine, lines);
    }
}
