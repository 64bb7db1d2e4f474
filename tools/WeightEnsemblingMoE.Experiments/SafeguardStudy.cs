using WeightEnsembling.Clip;

namespace WeightEnsembling.Experiments;

/// <summary>
/// Issue 17's item 6: WEMoE (2-layer routers) adapted without safeguards and with each opt-in safeguard beyond the papers
/// (a pull of the routers towards their start, a diversity term against the collapse to one class, early stopping on the
/// entropy of held-out unlabelled images, all three), on the same tasks and under the same recipe otherwise.
/// </summary>
public static class SafeguardStudy
{
    /// <summary>The variants, in the order run: a label and the settings it adds to the base options.</summary>
    public static IReadOnlyList<(string Label, Action<MergingBenchmarkOptions> Apply)> Variants { get; } =
    [
        ("no safeguard (the papers')", _ => { }),
        ("anchor 1", o => o.WemoeAnchorStrength = 1),
        ("anchor 100", o => o.WemoeAnchorStrength = 100),
        ("diversity 1", o => o.WemoeDiversityWeight = 1),
        ("early stopping (every 50 steps, patience 3)", o => o.WemoeEarlyStoppingInterval = 50),
        ("anchor 100 + diversity 1 + early stopping", o =>
        {
            o.WemoeAnchorStrength = 100;
            o.WemoeDiversityWeight = 1;
            o.WemoeEarlyStoppingInterval = 50;
        }),
    ];

    /// <summary>Runs WEMoE once per variant.</summary>
    /// <param name="pretrained">The pre-trained model (not modified).</param>
    /// <param name="experts">One fine-tuned model per task (not modified).</param>
    /// <param name="tasks">The tasks; early stopping reads their validation images, unlabelled.</param>
    /// <param name="configure">Sets the recipe every variant shares (steps, projection, λ0), or <see langword="null"/>.</param>
    /// <param name="progress">Receives a line per phase.</param>
    /// <returns>A label and a result per variant.</returns>
    public static IReadOnlyList<(string Label, MethodResult Result)> Run(
        ClipVisionModel pretrained,
        IReadOnlyList<ClipVisionModel> experts,
        IReadOnlyList<BenchmarkTask> tasks,
        Action<MergingBenchmarkOptions>? configure,
        IProgress<string>? progress = null)
    {
        var rows = new List<(string, MethodResult)>();
        foreach (var (label, apply) in Variants)
        {
            var options = new MergingBenchmarkOptions { Methods = [MergingMethod.Wemoe] };
            configure?.Invoke(options);
            apply(options);
            progress?.Report($"safeguards: {label}");
            rows.Add(($"WEMoE (2-layer), {label}", MergingBenchmark.Run(pretrained, experts, tasks, options, progress).Single()));
        }

        return rows;
    }
}
