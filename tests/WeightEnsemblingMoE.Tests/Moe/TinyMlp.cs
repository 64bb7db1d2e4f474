using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Moe;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Moe;

/// <summary>A tiny MLP (fc1 → exact GELU → fc2) implementing <see cref="IMergeableModule"/>: the forward math exists once.</summary>
internal sealed class TinyMlp : nn.Module<Tensor, Tensor>, IMergeableModule
{
    private readonly Linear fc1;
    private readonly Linear fc2;

    public TinyMlp(int hidden, int intermediate, bool hasBias = true) : base(nameof(TinyMlp))
    {
        fc1 = nn.Linear(hidden, intermediate, hasBias);
        fc2 = nn.Linear(intermediate, hidden, hasBias);
        RegisterComponents();
    }

    public IReadOnlyList<string> LinearLayerNames { get; } = ["fc1", "fc2"];

    public Tensor Forward(Tensor input, LinearLayerFunction linear)
    {
        using var scope = NewDisposeScope();
        var hidden = nn.functional.gelu(linear("fc1", input));
        return linear("fc2", hidden).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor input)
        => Forward(input, (name, x) => name == "fc1" ? fc1.call(x) : fc2.call(x));

    /// <summary>Copies the given parameters (by state-dict key) into this MLP.</summary>
    public TinyMlp Load(IReadOnlyDictionary<string, Tensor> parameters)
    {
        using var noGrad = no_grad();
        foreach (var (name, parameter) in named_parameters())
        {
            parameter.copy_(parameters[name]);
        }

        return this;
    }
}
