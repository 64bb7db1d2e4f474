namespace WeightEnsembling.Plotting;

/// <summary>The size of a saved figure.</summary>
public sealed class FigureOptions
{
    /// <summary>The width of one panel in pixels. The default value is 640.</summary>
    public int PanelWidth { get; set; } = 640;

    /// <summary>The height of one panel in pixels. The default value is 480.</summary>
    public int PanelHeight { get; set; } = 480;

    /// <summary>The most panels in one row of a figure with several panels. The default value is 3.</summary>
    public int MaxColumns { get; set; } = 3;

    /// <summary>Checks every option.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range; the message names it.</exception>
    public void Validate()
    {
        if (PanelWidth < 100 || PanelWidth > 8000)
        {
            throw new ArgumentOutOfRangeException(nameof(PanelWidth), PanelWidth, "The panel width must be between 100 and 8000 pixels.");
        }
        if (PanelHeight < 100 || PanelHeight > 8000)
        {
            throw new ArgumentOutOfRangeException(nameof(PanelHeight), PanelHeight, "The panel height must be between 100 and 8000 pixels.");
        }
        if (MaxColumns < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxColumns), MaxColumns, "A figure needs at least one column of panels.");
        }
    }
}
