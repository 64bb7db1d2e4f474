using WeightEnsembling.Data;
using WeightEnsembling.Images;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace DocsSnippets;

/// <summary>The snippets of docs/images-and-datasets.md.</summary>
public static class ImageDataSnippets
{
    /// <summary>Decodes one image and preprocesses it as the checkpoint's CLIPImageProcessor does.</summary>
    public static Tensor DecodeAndPreprocess(string checkpoint, string imagePath)
    {
        #region DecodeAndPreprocess
        var processor = ClipImageProcessor.FromPretrained(checkpoint);   // reads preprocessor_config.json
        var decoder = new ImageDecoder { MaxPixels = 50_000_000 };       // refuses larger images before decoding
        RgbImage image = decoder.Decode(imagePath);                       // PNG, JPEG, BMP, GIF, WebP → 8-bit RGB
        Tensor pixels = processor.Preprocess(image);                      // float32 [3, 224, 224]
        #endregion
        return pixels;
    }

    /// <summary>Streams an image folder in shuffled batches and counts the examples seen.</summary>
    public static long ImageFolder(string checkpoint, string folder)
    {
        #region ImageFolder
        var processor = ClipImageProcessor.FromPretrained(checkpoint);
        var options = new DataLoaderOptions { LoaderThreads = 2, PrefetchBatches = 4, CorruptImages = CorruptImagePolicy.Skip };
        using TaskDataset data = ImageFolderDataset.Open(folder, processor, options);   // one sub-folder per class
        long seen = 0;
        foreach (TaskBatch batch in data.Batches(batchSize: 32, shuffle: true, seed: 0))
        {
            using (batch)
            {
                seen += batch.Count;                                           // batch.Images: [B, 3, 224, 224]
            }
        }
        #endregion
        return seen;
    }

    /// <summary>Opens the parquet files of a Hugging Face split and draws one batch.</summary>
    public static long[] Parquet(string checkpoint, string[] files)
    {
        #region Parquet
        var processor = ClipImageProcessor.FromPretrained(checkpoint);
        using var split = ParquetImageDataset.Open(files, processor, imageColumn: "image", labelColumn: "label");
        using TaskBatch first = split.Batches(batchSize: 4).First();
        long[] labels = first.Labels!.data<long>().ToArray();
        #endregion
        return labels;
    }
}
