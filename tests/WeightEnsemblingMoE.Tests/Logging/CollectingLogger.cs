using Microsoft.Extensions.Logging;

namespace WeightEnsembling.Tests.Logging;

/// <summary>A logger (and provider) that keeps every entry, for assertions on what the library logs.</summary>
internal sealed class CollectingLogger : ILogger, ILoggerProvider
{
    private readonly List<(LogLevel Level, EventId Id, string Message)> entries = [];

    public IReadOnlyList<(LogLevel Level, EventId Id, string Message)> Entries
    {
        get
        {
            lock (entries)
            {
                return entries.ToList();
            }
        }
    }

    public IEnumerable<int> EventIds => Entries.Select(e => e.Id.Id);

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (entries)
        {
            entries.Add((logLevel, eventId, formatter(state, exception)));
        }
    }

    public ILogger CreateLogger(string categoryName) => this;

    public void Dispose()
    {
    }
}
