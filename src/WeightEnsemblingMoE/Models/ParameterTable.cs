using System.Globalization;
using System.Text;
using WeightEnsembling.Clip;
using WeightEnsembling.TaskVectors;
using WeightEnsembling.Upscaling;

namespace WeightEnsembling.Models;

/// <summary>
/// The WEMoE papers' parameter table: for 1..T experts and each task-vector storage, the trainable and total parameters of
/// the upscaled model and the parameters saved by merging (T × one model − total). Every row is measured on a model
/// really built by <see cref="ModelUpscaler"/>, not computed from a formula.
/// </summary>
public sealed class ParameterTable
{
    private ParameterTable(long singleModel, IReadOnlyList<ParameterTableRow> rows)
    {
        SingleModelParameters = singleModel;
        Rows = rows;
    }

    /// <summary>The parameters of one plain model.</summary>
    public long SingleModelParameters { get; }

    /// <summary>The rows, by storage then by number of experts.</summary>
    public IReadOnlyList<ParameterTableRow> Rows { get; }

    /// <summary>Builds an upscaled model for every number of experts 1..T and every storage, and counts its parameters.</summary>
    /// <param name="pretrained">The pre-trained model.</param>
    /// <param name="finetuned">The experts; rows use the first t of them.</param>
    /// <param name="storages">The storages to tabulate, by label.</param>
    /// <param name="options">Upscaler options other than the storage; <see langword="null"/> for the defaults.</param>
    /// <returns>The table.</returns>
    public static ParameterTable Compute(
        ClipVisionModel pretrained,
        IReadOnlyList<ClipVisionModel> finetuned,
        IReadOnlyList<(string Label, TaskVectorStorageOptions Storage)> storages,
        ModelUpscalerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(finetuned);
        ArgumentNullException.ThrowIfNull(storages);
        if (finetuned.Count == 0 || storages.Count == 0)
        {
            throw new ArgumentException("At least one expert and one storage are needed.");
        }

        long single = ParameterCount.Of(pretrained).Total;
        var rows = new List<ParameterTableRow>();
        foreach (var (label, storage) in storages)
        {
            for (int t = 1; t <= finetuned.Count; t++)
            {
                var upscalerOptions = (options ?? new ModelUpscalerOptions()).Clone();
                upscalerOptions.TaskVectorStorage = storage;
                using var upscaled = ModelUpscaler.For(pretrained).WithExperts(finetuned.Take(t)).WithOptions(upscalerOptions).Build();
                var count = upscaled.CountParameters();
                rows.Add(new ParameterTableRow(label, t, count.Trainable, count.Total, count.Bytes, (t * single) - count.Total));
            }
        }

        return new ParameterTable(single, rows);
    }

    /// <summary>Renders the table as Markdown (one row per storage and number of experts).</summary>
    /// <returns>The Markdown text.</returns>
    public string ToMarkdown()
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"One plain model: {SingleModelParameters:N0} parameters.");
        text.AppendLine();
        text.AppendLine("| storage | experts | trainable | total | MB | saved by merging |");
        text.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: |");
        foreach (var row in Rows)
        {
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {row.Storage} | {row.Experts} | {row.Trainable:N0} | {row.Total:N0} | {row.Bytes / 1048576.0:F1} | {row.SavedByMerging:N0} |");
        }

        return text.ToString();
    }
}
