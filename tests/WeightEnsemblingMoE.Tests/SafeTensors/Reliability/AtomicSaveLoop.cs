using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors.Reliability;

/// <summary>
/// Two known checkpoint states and a loop that saves them alternately into one folder, for the kill tests: whatever
/// moment the loop is killed at, the folder must hold the whole of one state.
/// </summary>
internal static class AtomicSaveLoop
{
    /// <summary>State A: 6 tensors of 256 KiB in 3 shards; state B: 4 other tensors of 192 KiB in 2 shards (other sizes).</summary>
    public static Dictionary<string, Tensor> ShardedState(int which)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var count = which == 0 ? 6 : 4;
        for (var i = 0; i < count; i++)
        {
            result[$"t{i}.{(which == 0 ? "a" : "b")}"] = torch.full(new long[] { which == 0 ? 64 : 48, 1024 }, (float)(which * 100 + i));
        }
        return result;
    }

    /// <summary>The shard size that splits state A into 3 shards and B into 2.</summary>
    public const long ShardBytes = 2 * 64 * 1024 * 4;

    /// <summary>Two CLIP vision architectures that differ in width and depth.</summary>
    public static ClipVisionConfig ClipState(int which) => which == 0
        ? new ClipVisionConfig { HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, ImageSize = 32, PatchSize = 8, ProjectionDim = 16 }
        : new ClipVisionConfig { HiddenSize = 48, IntermediateSize = 96, NumHiddenLayers = 3, NumAttentionHeads = 4, ImageSize = 32, PatchSize = 8, ProjectionDim = 16 };

    public static int Run(string mode, string folder)
    {
        torch.manual_seed(1);
        var sharded = new[] { ShardedState(0), ShardedState(1) };
        var models = mode == "clip" ? new[] { new ClipVisionModel(ClipState(0)), new ClipVisionModel(ClipState(1)) } : null;
        for (var i = 0; ; i++)
        {
            if (models is not null)
            {
                models[i % 2].SaveTo(folder);
            }
            else
            {
                SafeTensorsWriter.SaveSharded(folder, sharded[i % 2], ShardBytes);
            }
            Console.Out.WriteLine($"saved {i}");
            Console.Out.Flush();
        }
    }
}
