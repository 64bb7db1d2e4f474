namespace WeightEnsembling.World;

/// <summary>One task of the world (config section <c>tasks</c>): a labelled set derived from the sources' metadata.</summary>
public sealed class TaskSpec
{
    /// <summary>The task's name (a folder name).</summary>
    public string Name { get; set; } = "";

    /// <summary>The sources its items come from.</summary>
    public List<string> Sources { get; set; } = [];

    /// <summary>
    /// The item attribute that is the label (e.g. <c>category</c>, <c>continent</c>, <c>set</c>, <c>character</c>,
    /// <c>tone</c>, <c>label</c>), or <c>name</c>: the class keys are then regular expressions matched against the item's
    /// name (words, e.g. <c>arrow big up</c>), the first matching class in order wins.
    /// </summary>
    public string Label { get; set; } = "";

    /// <summary>Attribute value (or name pattern) → class name for zero-shot prompts, in class order; items of no class are left out.</summary>
    public Dictionary<string, string> Classes { get; set; } = [];

    /// <summary>Prompt templates, each with one <c>{}</c> for the class name.</summary>
    public List<string> Templates { get; set; } = [];

    /// <summary>
    /// <c>item</c> (the default): the classes' items are split between train, validation and test, so test images show
    /// unseen items; <c>render</c>: every split renders all items, under different augmentations.
    /// </summary>
    public string SplitBy { get; set; } = "item";

    /// <summary>Images in the training split.</summary>
    public int Train { get; set; } = 1000;

    /// <summary>Images in the validation split.</summary>
    public int Val { get; set; } = 200;

    /// <summary>Images in the test split.</summary>
    public int Test { get; set; } = 500;
}
