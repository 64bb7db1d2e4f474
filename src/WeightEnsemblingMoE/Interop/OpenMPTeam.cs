using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace WeightEnsembling.Interop;

/// <summary>
/// Runs the parts of a managed kernel on libtorch's own OpenMP team (GNU OpenMP's <c>GOMP_parallel</c>, the entry point
/// a compiler emits for <c>#pragma omp parallel</c>), so that a managed kernel and libtorch's ops share one set of worker
/// threads. With .NET's thread pool instead, libgomp's workers, which spin for milliseconds after every parallel libtorch
/// op, compete for the cores with the pool threads the kernel wakes (docs/torchsharp-notes.md). The libgomp the process
/// has loaded (libtorch's, found in <c>/proc/self/maps</c>) is used; where there is none (another OS, another OpenMP
/// runtime, or inside a parallel region already), the parts run through <see cref="Parallel.For(int, int, ParallelOptions, Action{int})"/>.
/// </summary>
internal static unsafe class OpenMPTeam
{
    private static readonly Lazy<Entry?> Loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Whether kernels use libgomp's team (false: .NET's thread pool; for A/B timings). The default value is true.</summary>
    internal static bool Enabled { get; set; } = true;

    /// <summary>Whether libgomp's entry points were found in this process.</summary>
    internal static bool IsAvailable => Loaded.Value is not null;

    /// <summary>
    /// Calls <paramref name="body"/>(part) for every part in [0, <paramref name="parts"/>), at most <paramref name="parts"/>
    /// at a time, and returns when all have finished; the first exception a part throws is rethrown here. One part runs
    /// inline.
    /// </summary>
    internal static void For(int parts, Action<int> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        if (parts <= 1)
        {
            if (parts == 1)
            {
                body(0);
            }

            return;
        }

        var entry = Enabled ? Loaded.Value : null;
        if (entry is null || entry.InParallel() != 0)
        {
            Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, body);
            return;
        }

        var work = new Work(body, parts, entry);
        var handle = GCHandle.Alloc(work);
        try
        {
            entry.Parallel(&Run, (void*)GCHandle.ToIntPtr(handle), (uint)parts, 0);
        }
        finally
        {
            handle.Free();
        }

        work.Failure?.Throw();
    }

    /// <summary>One team thread's share: parts thread, thread + team size, … (all of them if the team came out smaller).</summary>
    [UnmanagedCallersOnly]
    private static void Run(void* state)
    {
        var work = (Work)GCHandle.FromIntPtr((nint)state).Target!;
        try
        {
            int thread = work.Entry.ThreadNumber();
            int team = Math.Max(1, work.Entry.TeamSize());
            for (int part = thread; part < work.Parts; part += team)
            {
                work.Body(part);
            }
        }
        catch (Exception e)
        {
            // An exception must not unwind through libgomp's frames: keep the first, rethrown on the calling thread.
            Interlocked.CompareExchange(ref work.Captured, ExceptionDispatchInfo.Capture(e), null);
        }
    }

    /// <summary>The loaded libgomp's entry points, or null where there is none.</summary>
    private static Entry? Load()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        try
        {
            string? path = File.ReadLines("/proc/self/maps")
                .Select(line => line.IndexOf('/', StringComparison.Ordinal) is int at and >= 0 ? line[at..] : null)
                .FirstOrDefault(p => p is not null && Path.GetFileName(p).StartsWith("libgomp", StringComparison.Ordinal));
            if (path is null || !NativeLibrary.TryLoad(path, out var library))
            {
                return null;
            }

            // The library stays loaded for the process's lifetime (libtorch holds it too), so the handle is never freed.
            if (NativeLibrary.TryGetExport(library, "GOMP_parallel", out var parallel)
                && NativeLibrary.TryGetExport(library, "omp_get_thread_num", out var threadNumber)
                && NativeLibrary.TryGetExport(library, "omp_get_num_threads", out var teamSize)
                && NativeLibrary.TryGetExport(library, "omp_in_parallel", out var inParallel))
            {
                return new Entry(
                    (delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void>)parallel,
                    (delegate* unmanaged<int>)threadNumber,
                    (delegate* unmanaged<int>)teamSize,
                    (delegate* unmanaged<int>)inParallel);
            }

            return null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>libgomp's entry points.</summary>
    private sealed class Entry(
        delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> parallel,
        delegate* unmanaged<int> threadNumber,
        delegate* unmanaged<int> teamSize,
        delegate* unmanaged<int> inParallel)
    {
        /// <summary><c>GOMP_parallel(fn, data, num_threads, flags)</c>: runs fn(data) on a team, the caller as thread 0.</summary>
        internal void Parallel(delegate* unmanaged<void*, void> body, void* data, uint threads, uint flags) => parallel(body, data, threads, flags);

        /// <summary><c>omp_get_thread_num()</c>.</summary>
        internal int ThreadNumber() => threadNumber();

        /// <summary><c>omp_get_num_threads()</c>.</summary>
        internal int TeamSize() => teamSize();

        /// <summary><c>omp_in_parallel()</c>.</summary>
        internal int InParallel() => inParallel();
    }

    /// <summary>One call's state, reached from the team's threads through a GC handle.</summary>
    private sealed class Work(Action<int> body, int parts, Entry entry)
    {
        internal ExceptionDispatchInfo? Captured;

        internal Action<int> Body { get; } = body;

        internal int Parts { get; } = parts;

        internal Entry Entry { get; } = entry;

        internal ExceptionDispatchInfo? Failure => Volatile.Read(ref Captured);
    }
}
