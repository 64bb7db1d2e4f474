using WeightEnsembling.SafeTensors;
namespace WeightEnsembling.Models;

/// <summary>A state-dict entry whose shape differs from the module's parameter or buffer of the same key.</summary>
/// <param name="Name">The state-dict key.</param>
/// <param name="Expected">The shape of the module's tensor.</param>
/// <param name="Actual">The shape of the supplied tensor.</param>
public sealed record StateDictShapeMismatch(string Name, long[] Expected, long[] Actual)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Name}: expected [{string.Join(", ", Expected)}], got [{string.Join(", ", Actual)}]";
}
