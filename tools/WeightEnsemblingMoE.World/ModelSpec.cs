using WeightEnsembling.Clip;

namespace WeightEnsembling.World;

/// <summary>The tiny CLIP's shape (config section <c>model</c>) and the size of its BPE vocabulary.</summary>
public sealed class ModelSpec
{
    /// <summary>Image tower width. The default value is 128.</summary>
    public int VisionWidth { get; set; } = 128;

    /// <summary>Image tower layers. The default value is 4.</summary>
    public int VisionLayers { get; set; } = 4;

    /// <summary>Image tower attention heads. The default value is 4.</summary>
    public int VisionHeads { get; set; } = 4;

    /// <summary>Patch side in pixels. The default value is 4.</summary>
    public int PatchSize { get; set; } = 4;

    /// <summary>Text tower width. The default value is 128.</summary>
    public int TextWidth { get; set; } = 128;

    /// <summary>Text tower layers. The default value is 3.</summary>
    public int TextLayers { get; set; } = 3;

    /// <summary>Text tower attention heads. The default value is 4.</summary>
    public int TextHeads { get; set; } = 4;

    /// <summary>Tokens per text, start and end included. The default value is 32.</summary>
    public int ContextLength { get; set; } = 32;

    /// <summary>The joint embedding's width. The default value is 64.</summary>
    public int ProjectionDim { get; set; } = 64;

    /// <summary>The BPE vocabulary's size (512 byte tokens, the merges, the two special tokens). The default value is 2000.</summary>
    public int VocabSize { get; set; } = 2000;

    /// <summary>The CLIP config for images of <paramref name="imageSize"/> pixels and a vocabulary of <paramref name="vocabSize"/>.</summary>
    public ClipConfig ToClipConfig(int imageSize, int vocabSize) => ClipConfig.Create(
        new ClipTextConfig
        {
            VocabSize = vocabSize,
            HiddenSize = TextWidth,
            IntermediateSize = TextWidth * 4,
            NumHiddenLayers = TextLayers,
            NumAttentionHeads = TextHeads,
            MaxPositionEmbeddings = ContextLength,
            ProjectionDim = ProjectionDim,
            BosTokenId = vocabSize - 2,
            EosTokenId = vocabSize - 1,
            PadTokenId = vocabSize - 1,
        },
        new ClipVisionConfig
        {
            HiddenSize = VisionWidth,
            IntermediateSize = VisionWidth * 4,
            NumHiddenLayers = VisionLayers,
            NumAttentionHeads = VisionHeads,
            ImageSize = imageSize,
            PatchSize = PatchSize,
            NumChannels = 3,
            ProjectionDim = ProjectionDim,
        },
        ProjectionDim);
}
