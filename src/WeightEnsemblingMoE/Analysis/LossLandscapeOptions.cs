namespace WeightEnsembling.Analysis;

/// <summary>Options of <see cref="LossLandscapes.Compute"/>: the λ grid and the evaluation batch size.</summary>
public sealed class LossLandscapeOptions
{
    /// <summary>The number of λ values per axis (the grid has Resolution² points). The default value is 11.</summary>
    /// <remarks>An odd resolution over a range symmetric about 0 puts grid points exactly on λ = 0 and λ = ±1.</remarks>
    public int Resolution { get; set; } = 11;

    /// <summary>The smallest λ on both axes. The default value is −1.</summary>
    public double Minimum { get; set; } = -1;

    /// <summary>The largest λ on both axes. The default value is 1.</summary>
    public double Maximum { get; set; } = 1;

    /// <summary>The number of examples per evaluation batch. The default value is 64.</summary>
    public int BatchSize { get; set; } = 64;

    /// <summary>Checks every option.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range; the message names it.</exception>
    public void Validate()
    {
        if (Resolution < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(Resolution), Resolution, "The loss-landscape resolution must be at least 2.");
        }
        if (!double.IsFinite(Minimum) || !double.IsFinite(Maximum) || !(Minimum < Maximum))
        {
            throw new ArgumentOutOfRangeException(nameof(Minimum), Minimum, $"The loss-landscape range [{Minimum}, {Maximum}] must be finite with Minimum < Maximum.");
        }
        if (BatchSize < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "The loss-landscape batch size must be at least 1.");
        }
    }

    /// <summary>The λ values of one axis: Resolution evenly spaced values from <see cref="Minimum"/> to <see cref="Maximum"/>.</summary>
    /// <returns>The values, first <see cref="Minimum"/>, last <see cref="Maximum"/>.</returns>
    public double[] AxisValues()
    {
        Validate();
        var values = new double[Resolution];
        for (int i = 0; i < Resolution; i++)
        {
            // Computed from both ends so that symmetric grids hold exact zeros and ends.
            values[i] = ((Minimum * (Resolution - 1 - i)) + (Maximum * i)) / (Resolution - 1);
        }

        return values;
    }
}
