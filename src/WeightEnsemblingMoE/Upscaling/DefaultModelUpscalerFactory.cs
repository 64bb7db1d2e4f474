using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using WeightEnsembling.Clip;
using WeightEnsembling.DependencyInjection;

namespace WeightEnsembling.Upscaling;

/// <summary>The registered <see cref="IModelUpscalerFactory"/>: <see cref="ModelUpscaler"/> with the configured options.</summary>
internal sealed class DefaultModelUpscalerFactory(IOptions<WeightEnsemblingMoEOptions> options, ILogger<ModelUpscaler>? logger = null) : IModelUpscalerFactory
{
    private ILogger Logger { get; } = logger ?? (ILogger)Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    public ModelUpscaler For(ClipVisionModel pretrained) =>
        ModelUpscaler.For(pretrained).WithOptions(options.Value.Upscaler).WithLogger(Logger);

    public ModelUpscaler ForFolder(string folder) =>
        ModelUpscaler.ForFolder(folder).WithOptions(options.Value.Upscaler).WithLogger(Logger);
}
