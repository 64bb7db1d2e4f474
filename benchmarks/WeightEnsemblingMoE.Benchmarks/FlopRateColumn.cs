using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace WeightEnsembling.Benchmarks;

/// <summary>
/// "GFLOP/s": <see cref="FlopRateBenchmarks.Flops"/> of a case divided by its median time; "of GEMM": that rate over
/// the rate of <see cref="FlopRateBenchmarks.Gemm"/> with the same parameters, in the same summary.
/// </summary>
internal sealed class FlopRateColumn(bool ofGemm) : IColumn
{
    public string Id => ofGemm ? "FlopRate.OfGemm" : "FlopRate.GFlops";

    public string ColumnName => ofGemm ? "of GEMM" : "GFLOP/s";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => ofGemm ? 1 : 0;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => ofGemm
        ? "Achieved FLOP/s over the plain GEMM's FLOP/s in the same run"
        : "Achieved GFLOP/s: formula FLOPs (VitB32Flops) / median time";

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public bool IsAvailable(Summary summary) => true;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        double rate = Rate(summary, benchmarkCase);
        if (!ofGemm)
        {
            return double.IsNaN(rate) ? "NA" : rate.ToString("F1", CultureInfo.InvariantCulture);
        }

        var gemm = summary.BenchmarksCases.FirstOrDefault(c =>
            c.Descriptor.WorkloadMethod.Name == nameof(FlopRateBenchmarks.Gemm) && c.Parameters.FolderInfo == benchmarkCase.Parameters.FolderInfo);
        double gemmRate = gemm is null ? double.NaN : Rate(summary, gemm);
        return double.IsNaN(rate) || double.IsNaN(gemmRate) ? "NA" : (rate / gemmRate).ToString("P0", CultureInfo.InvariantCulture);
    }

    /// <summary>GFLOP/s of a case (FLOP per nanosecond), or NaN without results.</summary>
    internal static double Rate(Summary summary, BenchmarkCase benchmarkCase)
    {
        var statistics = summary[benchmarkCase]?.ResultStatistics;
        int taskBatches = benchmarkCase.HasParameters && benchmarkCase.Parameters["TaskBatches"] is int t ? t : 1;
        double flops = FlopRateBenchmarks.Flops(benchmarkCase.Descriptor.WorkloadMethod.Name, taskBatches);
        return statistics is null || double.IsNaN(flops) ? double.NaN : flops / statistics.Median;
    }

    public override string ToString() => ColumnName;
}
