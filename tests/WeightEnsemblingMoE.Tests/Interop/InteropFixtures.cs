using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Interop;

internal static class InteropFixtures
{
    public static string Path(string name) => System.IO.Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Interop", name);

    public static bool Same(this Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public static void DisposeAll(this IEnumerable<Tensor> tensors)
    {
        foreach (var tensor in tensors)
        {
            tensor.Dispose();
        }
    }
}
