using TorchSharp;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Devices;

/// <summary>
/// Wraps a real head and checks every tensor it receives: the features and the head's own parameters must be on the
/// expected device, else it throws naming both. Counts the batches it saw.
/// </summary>
internal sealed class DeviceCheckingHead : TaskHead
{
    private readonly TaskHead inner;

    public DeviceCheckingHead(TaskHead inner, Device expected)
        : base(nameof(DeviceCheckingHead), inner.ClassNames)
    {
        this.inner = inner;
        Expected = expected;
        RegisterComponents();
    }

    public Device Expected { get; set; }

    public int Calls { get; private set; }

    public override int ClassCount => inner.ClassCount;

    public override int InputDimension => inner.InputDimension;

    public override Tensor forward(Tensor features)
    {
        Check(features, "the features");
        foreach (var (name, parameter) in named_parameters())
        {
            Check(parameter, $"head parameter '{name}'");
        }

        Calls++;
        return inner.forward(features);
    }

    public override void Save(string path) => inner.Save(path);

    private void Check(Tensor tensor, string what)
    {
        if (tensor.device.type != Expected.type || tensor.device.index != Expected.index)
        {
            throw new InvalidOperationException($"Device guard: {what} is on {tensor.device}, the model on {Expected}.");
        }
    }
}
