namespace WeightEnsembling.Samples;

/// <summary>An <see cref="IProgress{T}"/> that reports on the caller's thread, so bars move while a step runs.</summary>
internal sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
