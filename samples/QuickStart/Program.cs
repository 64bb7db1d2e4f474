using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Moe;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

// A first look at the library on a tiny random CLIP vision model: upcycle three "fine-tuned" experts into a WEMoE
// model, run it with per-sample routing, and merge it back into a plain model.
torch.manual_seed(0);
var config = new ClipVisionConfig
{
    HiddenSize = 64, IntermediateSize = 256, NumHiddenLayers = 4, NumAttentionHeads = 4,
    ImageSize = 28, PatchSize = 4, NumChannels = 3, ProjectionDim = 32,
};
using var pretrained = new ClipVisionModel(config);
var experts = Enumerable.Range(0, 3).Select(t =>
{
    var expert = new ClipVisionModel(config);
    using var noGrad = no_grad();
    var source = pretrained.state_dict();
    foreach (var (name, tensor) in expert.state_dict())
    {
        tensor.copy_(source[name] + randn(tensor.shape) * 0.02);
    }

    return expert;
}).ToList();

using var upscaled = Upscaler.Upcycle(pretrained, experts);
var counts = upscaled.CountParameters();
Console.WriteLine($"Upscaled {upscaled.Modules.Count} MLPs over {upscaled.TaskCount} experts: {counts.Trainable:N0} trainable / {counts.Total:N0} total parameters.");

using var images = randn(4, 3, 28, 28);
upscaled.RoutingMode = RoutingMode.PerSample;
using (var output = upscaled.Forward(images))
{
    Console.WriteLine($"Image embeddings: [{string.Join(", ", output.ImageEmbeds!.shape)}]");
}

foreach (var (path, routing) in upscaled.LastRoutingWeights())
{
    Console.WriteLine($"{path}: routing of sample 0 = [{string.Join(", ", routing[0].data<float>().ToArray().Select(v => v.ToString("F3")))}]");
}

using var plain = upscaled.MergeAndUnload(tensor(new float[] { 0.3f, 0.3f, 0.3f }));
Console.WriteLine($"Merged back into a plain model with {plain.parameters().Sum(p => p.numel()):N0} parameters.");
foreach (var expert in experts)
{
    expert.Dispose();
}
