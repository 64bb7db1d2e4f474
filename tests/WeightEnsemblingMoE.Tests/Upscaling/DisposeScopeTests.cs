using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Upscaling;

/// <summary>Models built inside a caller's dispose scope must survive it (TorchSharp disposes tensors made in a scope).</summary>
[TestFixture, NonParallelizable]
public sealed class DisposeScopeTests
{
    [Test]
    public void ClipVisionModel_BuiltInsideDisposeScope_KeepsEveryParameter()
    {
        ClipVisionModel model;
        using (NewDisposeScope())
        {
            model = new ClipVisionModel(TinyClip.Config);
        }

        using (model)
        {
            using var reference = new ClipVisionModel(TinyClip.Config);
            Assert.That(model.state_dict().Keys, Is.EquivalentTo(reference.state_dict().Keys));
            using var images = TinyClip.Images(2, 1);
            using var output = model.forward(images);
            Assert.That(output.LastHiddenState.isfinite().all().item<bool>(), Is.True);
        }
    }

    [Test]
    public void Upcycle_BuiltInsideDisposeScopeWithZeroLayerRouters_KeepsRouters()
    {
        using var pretrained = TinyClip.Pretrained();
        using var expert = TinyClip.Expert(pretrained, 3);
        UpscaledModel upscaled;
        using (NewDisposeScope())
        {
            upscaled = ModelUpscaler.For(pretrained).WithExperts(expert).WithRouterDepth(0).Build();
        }

        using (upscaled)
        {
            Assert.That(upscaled.TrainableParameters(), Has.Count.EqualTo(2));
            using var images = TinyClip.Images(2, 2);
            using var output = upscaled.Forward(images);
            Assert.That(output.LastHiddenState.isfinite().all().item<bool>(), Is.True);
        }
    }
}
