using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Moe;
using static TorchSharp.torch;

namespace WeightEnsembling.Merging;

/// <summary>
/// A transient stand-in for a CLIP attention or MLP slot that runs the original module through
/// <see cref="IMergeableModule.Forward"/> with its own linear layers and hands every linear layer's input to a recorder
/// first: the equivalent of PyTorch forward hooks on those layers. (TorchSharp's <c>register_forward_hook</c> only fires
/// through <c>Module.call</c>, and the CLIP modules call <c>forward</c> directly.) It owns nothing: it registers no
/// components and keeps the wrapped module only inside delegates (once registered in a parent, TorchSharp finds modules held
/// in a wrapper's fields by reflection, whatever the field type, and disposing the wrapper would dispose them), so disposing it leaves the wrapped module alone.
/// </summary>
internal sealed class GramRecorder : nn.Module<Tensor, Tensor>
{
    private readonly Func<Tensor, LinearLayerFunction, Tensor> run;
    private readonly LinearLayerFunction recordingLinear;

    /// <summary>Wraps <paramref name="inner"/>, whose layer <c>name</c> is recorded as <c>prefix.name</c>.</summary>
    public GramRecorder(string prefix, IMergeableModule inner, Func<string, Linear> layerOf, Action<string, Tensor> record)
        : base(nameof(GramRecorder))
    {
        run = inner.Forward;
        recordingLinear = (name, x) =>
        {
            record($"{prefix}.{name}", x);
            return layerOf(name).forward(x);
        };

        // Deliberately no RegisterComponents(): the wrapped module stays owned (and registered) by its model.
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input) => run(input, recordingLinear);
}
