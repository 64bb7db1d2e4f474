using WeightEnsembling.Interop;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace DocsSnippets;

/// <summary>The snippets of docs/fusionbench-interop.md.</summary>
public static class InteropSnippets
{
    /// <summary>Reads a torch.save checkpoint (plain tensor data only) into tensors by name.</summary>
    public static Dictionary<string, Tensor> ReadTorchCheckpoint(string path)
    {
        #region ReadTorchCheckpoint
        // A Fabric checkpoint {"model": state_dict} yields the model's state dict; pass key: "..." to pick another entry.
        var stateDict = TorchCheckpointReader.ReadStateDict(path);
        Console.WriteLine($"{stateDict.Count} tensors, e.g. {stateDict.Keys.First()}");
        #endregion
        return stateDict;
    }

    /// <summary>Upcycles the models FusionBench merged and loads the routers it trained.</summary>
    public static UpscaledModel ImportFusionBenchRouters(string pretrainedFolder, string[] expertFolders, string checkpoint)
    {
        #region ImportFusionBenchRouters
        // FusionBench's pre-trained model, its experts in model_names order, its router_hidden_layers and init_lambda.
        var upscaled = ModelUpscaler.ForFolder(pretrainedFolder)
            .WithExpertFolders(expertFolders)
            .WithRouterDepth(2)
            .WithInitLambda(0.3)
            .Build();
        var expected = upscaled.RouterStateDict();
        var routers = FusionBenchRouters.Import(checkpoint, expected);   // fabric.save(...) file or routers-only torch.save
        upscaled.LoadRouterStateDict(routers);
        foreach (var tensor in expected.Values.Concat(routers.Values))
        {
            tensor.Dispose();
        }
        #endregion
        return upscaled;
    }

    /// <summary>Writes our routers for FusionBench, as a torch.save file and as safetensors.</summary>
    public static void ExportRoutersToFusionBench(UpscaledModel upscaled, string folder)
    {
        #region ExportRoutersToFusionBench
        var routers = upscaled.RouterStateDict();
        FusionBenchRouters.Save(Path.Combine(folder, "routers.pt"), routers);            // {"model": routers}, as fabric.save
        FusionBenchRouters.Save(Path.Combine(folder, "routers.safetensors"), routers);   // the same keys, safetensors
        foreach (var tensor in routers.Values)
        {
            tensor.Dispose();
        }
        #endregion
    }
}
