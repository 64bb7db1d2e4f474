using TorchSharp;
using WeightEnsembling.Tasks;
using WeightEnsembling.Training;
using static TorchSharp.torch;

namespace WeightEnsembling.Models;

/// <summary>
/// One device for everything: the model's device is read from its parameters, and heads, batches and labels are moved
/// to it by the code that runs the model (evaluator, Fisher, RegMean, AdaMerging, zero-shot heads, the training loop).
/// Tensors a path creates itself name the device explicitly, so that nothing depends on libtorch's default device.
/// </summary>
internal static class DeviceOf
{
    /// <summary>The device of a module: that of its first parameter (or buffer); the CPU for a module with neither.</summary>
    public static Device Module(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        foreach (var parameter in module.parameters())
        {
            return parameter.device;
        }

        foreach (var buffer in module.buffers())
        {
            return buffer.device;
        }

        return CPU;
    }

    /// <summary>The device of an adaptable model: that of its first trainable parameter; the CPU when it has none.</summary>
    public static Device Model(IAdaptableModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        foreach (var (_, parameter) in model.NamedTrainableParameters())
        {
            return parameter.device;
        }

        return CPU;
    }

    /// <summary>Whether two devices are the same (type and index).</summary>
    public static bool Same(Device a, Device b) => a.type == b.type && a.index == b.index;

    /// <summary>
    /// <paramref name="tensor"/> on <paramref name="device"/>: a new tensor (a copy when the device differs, an alias
    /// otherwise) in the current dispose scope. The caller's tensor is never disposed.
    /// </summary>
    public static Tensor On(Tensor tensor, Device device)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return Same(tensor.device, device) ? tensor.alias() : tensor.to(device);
    }

    /// <summary>The batch's images and labels on <paramref name="device"/>, in the current dispose scope (the batch still owns its own tensors).</summary>
    public static (Tensor Images, Tensor? Labels) Batch(TaskBatch batch, Device device)
    {
        ArgumentNullException.ThrowIfNull(batch);
        return (On(batch.Images, device), batch.Labels is null ? null : On(batch.Labels, device));
    }

    /// <summary>Moves every head (in place, as <c>Module.to</c> does) to <paramref name="device"/>; heads already there are left alone.</summary>
    public static void MoveHeads(IEnumerable<TaskHead> heads, Device device)
    {
        ArgumentNullException.ThrowIfNull(heads);
        foreach (var head in heads)
        {
            if (!Same(Module(head), device))
            {
                head.to(device);
            }
        }
    }

    /// <summary>Moves every task's head to <paramref name="device"/> (see <see cref="MoveHeads(IEnumerable{TaskHead}, Device)"/>).</summary>
    public static void MoveHeads(IEnumerable<ClassificationTask> tasks, Device device)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        MoveHeads(tasks.Select(t => t.Head), device);
    }

    /// <summary>Throws when <paramref name="tensor"/> is not on <paramref name="device"/>, naming it.</summary>
    /// <exception cref="ArgumentException">The devices differ.</exception>
    public static void Require(Tensor tensor, Device device, string what)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (!Same(tensor.device, device))
        {
            throw new ArgumentException($"{what} is on {tensor.device} but the model is on {device}; move it with .to(device) first.");
        }
    }
}
