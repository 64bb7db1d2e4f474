using WeightEnsembling.TaskVectors;

namespace WeightEnsembling.Upscaling;

/// <summary>How <see cref="ModelUpscaler"/> turns a pre-trained CLIP vision model and its fine-tuned experts into a WEMoE model.</summary>
public sealed class ModelUpscalerOptions
{
    /// <summary>The number of layers of each router: 0 (a learned vector), 1 or 2. The default value is 2.</summary>
    public int RouterDepth { get; set; } = 2;

    /// <summary>
    /// λ: the initial routing weight of every expert (the routers' last bias, or the 0-layer vector), and the task-arithmetic
    /// scaling factor for every parameter that is not upscaled. The default value is 0.3.
    /// </summary>
    public double InitLambda { get; set; } = 0.3;

    /// <summary>Whether one router is shared by every upscaled module (E-WEMoE). The default value is <see langword="false"/>.</summary>
    public bool SharedRouter { get; set; }

    /// <summary>
    /// Whether a shared router reads an 8-dimensional sinusoidal encoding of the layer index concatenated to its input.
    /// Only valid with <see cref="SharedRouter"/>. The default value is <see langword="false"/>.
    /// </summary>
    public bool PositionEncoding { get; set; }

    /// <summary>How the task vectors of upscaled modules are stored. The default value is dense storage.</summary>
    public TaskVectorStorageOptions TaskVectorStorage { get; set; } = TaskVectorStorageOptions.Dense();

    /// <summary>The encoder layers to upscale (0-based), or <see langword="null"/> for all of them. The default value is <see langword="null"/>.</summary>
    public IReadOnlyList<int>? Layers { get; set; }

    /// <summary>Which modules of each layer to upscale. The default value is <see cref="UpscaleTargets.Mlp"/>.</summary>
    public UpscaleTargets Targets { get; set; } = UpscaleTargets.Mlp;

    /// <summary>
    /// Whether <c>visual_projection</c>, which the zero-shot heads read, keeps the pre-trained weights (FusionBench's
    /// recipe: its classifier reads the pre-trained CLIP projection) instead of being merged by task arithmetic with the
    /// other non-upscaled weights (the original WEMoE repository's recipe). The default value is <see langword="false"/>
    /// (merged).
    /// </summary>
    public bool PretrainedProjection { get; set; }

    /// <summary>The seed of the routers' random initialisation. The default value is 42.</summary>
    public long Seed { get; set; } = 42;

    /// <summary>Checks every option, naming the first bad one.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public void Validate()
    {
        if (RouterDepth is < 0 or > 2)
        {
            throw new ArgumentException($"{nameof(RouterDepth)} must be 0, 1 or 2; it is {RouterDepth}.", nameof(RouterDepth));
        }

        if (!double.IsFinite(InitLambda))
        {
            throw new ArgumentException($"{nameof(InitLambda)} must be finite; it is {InitLambda}.", nameof(InitLambda));
        }

        if (PositionEncoding && !SharedRouter)
        {
            throw new ArgumentException($"{nameof(PositionEncoding)} needs {nameof(SharedRouter)}: only a router shared by all layers needs to know the layer.", nameof(PositionEncoding));
        }

        if (PositionEncoding && RouterDepth == 0)
        {
            throw new ArgumentException($"{nameof(PositionEncoding)} needs a router that reads its input ({nameof(RouterDepth)} 1 or 2).", nameof(PositionEncoding));
        }

        if (TaskVectorStorage is null)
        {
            throw new ArgumentException($"{nameof(TaskVectorStorage)} must be set.", nameof(TaskVectorStorage));
        }

        TaskVectorStorage.Validate();
        if ((Targets & UpscaleTargets.MlpAndAttention) == 0 || (Targets & ~UpscaleTargets.MlpAndAttention) != 0)
        {
            throw new ArgumentException($"{nameof(Targets)} must be Mlp, Attention or both; it is {Targets}.", nameof(Targets));
        }

        if (Layers is not null)
        {
            if (Layers.Count == 0)
            {
                throw new ArgumentException($"{nameof(Layers)} is empty; use null for all layers.", nameof(Layers));
            }

            if (Layers.Any(l => l < 0) || Layers.Distinct().Count() != Layers.Count)
            {
                throw new ArgumentException($"{nameof(Layers)} must hold distinct non-negative layer indices; it is [{string.Join(", ", Layers)}].", nameof(Layers));
            }
        }
    }

    /// <summary>A copy of these options.</summary>
    public ModelUpscalerOptions Clone() => new()
    {
        RouterDepth = RouterDepth,
        InitLambda = InitLambda,
        SharedRouter = SharedRouter,
        PositionEncoding = PositionEncoding,
        TaskVectorStorage = TaskVectorStorage?.Copy()!,
        Layers = Layers?.ToArray(),
        Targets = Targets,
        PretrainedProjection = PretrainedProjection,
        Seed = Seed,
    };
}
