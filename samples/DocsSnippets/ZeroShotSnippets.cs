#region ZeroShotUsings
using WeightEnsembling.Clip;
using WeightEnsembling.Tasks;
using WeightEnsembling.Text;
#endregion
using static TorchSharp.torch;

namespace DocsSnippets;

/// <summary>The zero-shot snippets of docs/huggingface-checkpoints.md.</summary>
public static class ZeroShotSnippets
{
    /// <summary>Loads a full CLIP folder and its tokenizer, builds a zero-shot head from class names and classifies images.</summary>
    /// <param name="folder">A CLIPModel folder with its tokenizer files (e.g. openai/clip-vit-base-patch32).</param>
    /// <param name="pixelValues">Preprocessed images [B, 3, image_size, image_size].</param>
    /// <returns>The head and the logits [B, classes].</returns>
    public static (ZeroShotClassificationHead Head, Tensor Logits) ClassifyByClassNames(string folder, Tensor pixelValues)
    {
        #region ZeroShotHead
        using var clip = ClipModel.FromPretrained(folder);      // config.json (text_config + vision_config) + model.safetensors
        var tokenizer = ClipTokenizer.FromPretrained(folder);  // tokenizer.json, or vocab.json + merges.txt
        string[] classNames = ["airplane", "automobile", "bird"];
        string[] templates = ["a photo of a {}.", "a blurry photo of a {}."];
        var head = ZeroShotClassificationHead.FromClassNames(clip, tokenizer, classNames, templates);
        var logits = head.forward(clip.GetImageFeatures(pixelValues));   // [B, 3]
        ClipVisionModel imageTower = clip.VisionModel;                    // for ModelUpscaler, merging, evaluation
        #endregion
        _ = imageTower;
        return (head, logits);
    }
}
