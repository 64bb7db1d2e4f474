using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using WeightEnsembling.DependencyInjection;
using WeightEnsembling.Evaluation;
using WeightEnsembling.Merging;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the WeightEnsemblingMoE services in an <see cref="IServiceCollection"/>.</summary>
public static class WeightEnsemblingMoEServiceCollectionExtensions
{
    /// <summary>
    /// Adds <see cref="IModelUpscalerFactory"/>, <see cref="ITestTimeAdapter"/> (<see cref="AdaptationTrainer"/>),
    /// <see cref="IModelEvaluator"/> and <see cref="IModelMerger"/> as singletons with <c>TryAdd</c> (a service registered
    /// before is kept, so an application can replace any of them), and <see cref="WeightEnsemblingMoEOptions"/> with a
    /// validator that names the bad option when <see cref="IOptions{TOptions}.Value"/> is first read. Bind the options from
    /// configuration with <c>services.Configure&lt;WeightEnsemblingMoEOptions&gt;(configuration.GetSection(WeightEnsemblingMoEOptions.SectionName))</c>.
    /// Services log through <see cref="ILogger{TCategoryName}"/> when logging is registered and stay silent otherwise.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Configures the options, or <see langword="null"/>. The default value is <see langword="null"/>.</param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    public static IServiceCollection AddWeightEnsemblingMoE(this IServiceCollection services, Action<WeightEnsemblingMoEOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddOptions();
        if (configure is not null)
        {
            services.Configure(configure);
        }

        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<WeightEnsemblingMoEOptions>, WeightEnsemblingMoEOptionsValidator>());
        services.TryAddSingleton<IModelUpscalerFactory, DefaultModelUpscalerFactory>();
        services.TryAddSingleton<IModelMerger, DefaultModelMerger>();
        services.TryAddSingleton<IModelEvaluator, DefaultModelEvaluator>();
        services.TryAddSingleton<ITestTimeAdapter>(provider => new AdaptationTrainer(
            provider.GetService<ILogger<AdaptationTrainer>>(),
            provider.GetRequiredService<IOptions<WeightEnsemblingMoEOptions>>().Value.TestTimeAdaptation));
        return services;
    }
}
