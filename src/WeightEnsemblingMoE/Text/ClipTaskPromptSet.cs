namespace WeightEnsembling.Text;

/// <summary>
/// The class names and prompt templates of one zero-shot classification task, as shipped by
/// <see cref="ClipTaskPrompts"/>.
/// </summary>
/// <param name="Task">The task name (FusionBench's dataset key, e.g. <c>sun397</c>, <c>stanford-cars</c>).</param>
/// <param name="ClassNames">The class names, in label order.</param>
/// <param name="Templates">The prompt templates, each with exactly one <c>{}</c> where the class name goes.</param>
/// <param name="Source">Where the names and templates come from: repository and path of the source file.</param>
/// <param name="Commit">The commit of <paramref name="Source"/> they were read from.</param>
/// <param name="License">The licence of the source (SPDX identifier).</param>
public sealed record ClipTaskPromptSet(
    string Task,
    IReadOnlyList<string> ClassNames,
    IReadOnlyList<string> Templates,
    string Source,
    string Commit,
    string License)
{
    /// <summary>Every template filled in with <paramref name="className"/>, in template order.</summary>
    /// <param name="className">The class name (any string; usually one of <see cref="ClassNames"/>).</param>
    /// <returns>One prompt per template.</returns>
    public IReadOnlyList<string> PromptsFor(string className)
    {
        ArgumentNullException.ThrowIfNull(className);
        return Templates.Select(template => ClipTaskPrompts.Format(template, className)).ToArray();
    }
}
