namespace WeightEnsembling.Training;

/// <summary>What an adaptation checkpoint's metadata says.</summary>
/// <param name="Method">The method that wrote it (<see cref="IAdaptableModel.Method"/>).</param>
/// <param name="Step">The number of training steps behind the saved parameters.</param>
/// <param name="Options">The training options of the run that wrote it.</param>
/// <param name="Fingerprint">The fingerprint of the frozen weights it was trained on.</param>
/// <param name="HasOptimizerState">Whether it holds the Adam moments needed to resume training exactly.</param>
public sealed record AdaptationCheckpointInfo(
    string Method,
    int Step,
    TestTimeAdaptationOptions Options,
    string Fingerprint,
    bool HasOptimizerState);
