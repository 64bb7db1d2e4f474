using Microsoft.Extensions.Options;

namespace WeightEnsembling.DependencyInjection;

/// <summary>Validates <see cref="WeightEnsemblingMoEOptions"/> when <see cref="IOptions{TOptions}.Value"/> is first read.</summary>
internal sealed class WeightEnsemblingMoEOptionsValidator : IValidateOptions<WeightEnsemblingMoEOptions>
{
    public ValidateOptionsResult Validate(string? name, WeightEnsemblingMoEOptions options)
    {
        try
        {
            options.Validate();
            return ValidateOptionsResult.Success;
        }
        catch (ArgumentException e)
        {
            return ValidateOptionsResult.Fail($"{WeightEnsemblingMoEOptions.SectionName}.{e.Message}");
        }
    }
}
