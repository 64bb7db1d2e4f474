using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Foundation;

/// <summary>The libtorch loading fix (docs/libtorch-loading.md): real math and autograd must run.</summary>
[TestFixture, NonParallelizable]
public sealed class LibTorchLoadingTests
{
    [Test]
    public void MatmulAndAutograd_RunThroughLibTorch()
    {
        using var scope = NewDisposeScope();
        var a = tensor(new float[] { 1, 2, 3, 4 }, 2, 2).requires_grad_();
        var b = tensor(new float[] { 5, 6, 7, 8 }, 2, 2);
        var product = a.matmul(b);
        Assert.That(product.data<float>().ToArray(), Is.EqualTo(new float[] { 19, 22, 43, 50 }));

        // d/da sum(a @ b) = ones @ b^T: every row is the row sums of b.
        product.sum().backward();
        Assert.That(a.grad!.data<float>().ToArray(), Is.EqualTo(new float[] { 11, 15, 11, 15 }));
    }

    [Test]
    public void OutputCopyOfLibTorchSharp_HasWeakGlibcxxNeed_WhenHostLacksIt()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Ignore("The fix applies to Linux only.");
        }
        string library = Directory.EnumerateFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories).First();
        bool? weak = ElfInspector.IsVersionNeedWeak(File.ReadAllBytes(library), "GLIBCXX_3.4.32");
        bool hostHasIt = ElfInspector.HostLibStdCxxProvides("GLIBCXX_3.4.32");
        if (hostHasIt)
        {
            Assert.That(weak, Is.Not.EqualTo(true), "the fix must leave the library alone on hosts that provide GLIBCXX_3.4.32");
        }
        else
        {
            Assert.That(weak, Is.True, "libLibTorchSharp.so in the output folder still has a strong GLIBCXX_3.4.32 need");
        }
    }
}
