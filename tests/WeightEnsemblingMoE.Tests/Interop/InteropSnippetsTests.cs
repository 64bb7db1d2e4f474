using DocsSnippets;
using WeightEnsembling.Interop;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors;
using WeightEnsembling.Tests.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Interop;

/// <summary>The snippets of docs/fusionbench-interop.md, run on tiny folders and the FusionBench fixtures.</summary>
[TestFixture, NonParallelizable]
public sealed class InteropSnippetsTests
{
    [Test]
    public void Snippets_ImportFusionBenchRouters_RouteAsPyTorch_AndExportReadsBack()
    {
        using var folder = new TempFolder();
        string pretrainedFolder = Path.Combine(folder.Path, "pretrained");
        var expertFolders = new string[3];
        using (var pretrained = TinyClip.Pretrained())
        {
            pretrained.SaveTo(pretrainedFolder);
            for (int t = 0; t < expertFolders.Length; t++)
            {
                using var expert = TinyClip.Expert(pretrained, 40 + t);
                expertFolders[t] = Path.Combine(folder.Path, $"expert{t}");
                expert.SaveTo(expertFolders[t]);
            }
        }

        using var upscaled = InteropSnippets.ImportFusionBenchRouters(pretrainedFolder, expertFolders, InteropFixtures.Path("fusionbench_depth2.pt"));
        using (var routing = SafeTensorsFile.Open(InteropFixtures.Path("routing_depth2.safetensors")))
        using (no_grad())
        {
            foreach (var module in upscaled.Modules)
            {
                using var x = routing.Load($"x{module.LayerIndex}");
                using var expected = routing.Load($"r{module.LayerIndex}");
                using var output = module.Module.forward(x);
                Assert.That((module.Module.LastRoutingWeights! - expected).abs().max().item<float>(), Is.LessThan(1e-5), module.Path);
            }
        }

        InteropSnippets.ExportRoutersToFusionBench(upscaled, folder.Path);
        var ours = upscaled.RouterStateDict();
        try
        {
            foreach (var file in new[] { "routers.pt", "routers.safetensors" })
            {
                var back = FusionBenchRouters.Import(Path.Combine(folder.Path, file), ours);
                Assert.That(back.Keys, Is.EquivalentTo(ours.Keys), file);
                Assert.That(back.All(b => b.Value.Same(ours[b.Key])), Is.True, file);
                back.Values.DisposeAll();
            }

            var state = InteropSnippets.ReadTorchCheckpoint(Path.Combine(folder.Path, "routers.pt"));
            Assert.That(state.Keys, Is.EquivalentTo(ours.Keys));
            state.Values.DisposeAll();
        }
        finally
        {
            ours.Values.DisposeAll();
        }
    }
}
