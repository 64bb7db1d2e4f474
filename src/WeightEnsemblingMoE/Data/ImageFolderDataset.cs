using WeightEnsembling.Images;

namespace WeightEnsembling.Data;

/// <summary>
/// Images in one sub-folder per class, like torchvision's <c>ImageFolder</c>: the classes are the sub-folder names
/// sorted ordinally (class i is the i-th), each class's files are found recursively (folders in sorted order, then files sorted by name), and only files with an
/// image extension (.jpg, .jpeg, .png, .bmp, .gif, .webp, any case) count. Images are decoded and preprocessed per batch.
/// </summary>
public sealed class ImageFolderDataset : StreamingImageDataset
{
    /// <summary>The file extensions read, lower case.</summary>
    public static readonly IReadOnlyList<string> Extensions = [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"];

    private readonly string[] _files;
    private readonly int[] _labels;

    private ImageFolderDataset(string name, string[] classes, string[] files, int[] labels, ClipImageProcessor processor, DataLoaderOptions? options)
        : base(name, classes.Length, processor, options)
    {
        Classes = classes;
        _files = files;
        _labels = labels;
    }

    /// <summary>The class names (the sub-folder names), in label order.</summary>
    public IReadOnlyList<string> Classes { get; }

    /// <inheritdoc />
    public override long Count => _files.LongLength;

    /// <inheritdoc />
    public override bool HasLabels => true;

    /// <summary>Indexes a folder of class sub-folders (no image is decoded yet).</summary>
    /// <param name="root">The folder holding one sub-folder per class.</param>
    /// <param name="processor">The preprocessing (e.g. <see cref="ClipImageProcessor.FromPretrained"/>).</param>
    /// <param name="options">The loader options, or <see langword="null"/> for the defaults.</param>
    /// <param name="name">The task name, or <see langword="null"/> for the folder's name.</param>
    /// <returns>The dataset.</returns>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="InvalidDataException">The folder has no class sub-folder, or a class folder holds no image file; the message names it.</exception>
    public static ImageFolderDataset Open(string root, ClipImageProcessor processor, DataLoaderOptions? options = null, string? name = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(root);
        ArgumentNullException.ThrowIfNull(processor);
        if (!Directory.Exists(root))
        {
            throw new DirectoryNotFoundException($"Image folder '{root}' does not exist.");
        }
        var classes = Directory.GetDirectories(root).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToArray();
        if (classes.Length == 0)
        {
            throw new InvalidDataException($"Image folder '{root}' has no class sub-folder.");
        }
        var files = new List<string>();
        var labels = new List<int>();
        for (int c = 0; c < classes.Length; c++)
        {
            string folder = Path.Combine(root, classes[c]);
            var found = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
                .Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                .OrderBy(f => Path.GetDirectoryName(f), StringComparer.Ordinal)
                .ThenBy(f => Path.GetFileName(f), StringComparer.Ordinal)
                .ToArray();
            if (found.Length == 0)
            {
                throw new InvalidDataException($"Class folder '{folder}' holds no image file ({string.Join(", ", Extensions)}).");
            }
            files.AddRange(found);
            labels.AddRange(Enumerable.Repeat(c, found.Length));
        }
        string taskName = name ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(root)));
        return new ImageFolderDataset(taskName, classes, files.ToArray(), labels.ToArray(), processor, options);
    }

    /// <summary>The file of an example.</summary>
    /// <param name="index">The example index.</param>
    /// <returns>The path.</returns>
    public string PathOf(long index) => _files[index];

    /// <inheritdoc />
    protected override RgbImage ReadImage(long index) => Options.Decoder.Decode(_files[index]);

    /// <inheritdoc />
    protected override long LabelOf(long index) => _labels[index];
}
