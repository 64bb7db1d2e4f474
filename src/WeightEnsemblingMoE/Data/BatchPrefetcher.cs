using System.Threading.Channels;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.Data;

/// <summary>
/// Loads batches ahead of the consumer: a producer walks the batch indices in order and starts each load on a
/// background thread (at most <c>threads</c> at once), queuing the pending loads in order in a bounded channel; the
/// consumer takes them from the channel in order and waits for each. Which thread loads a batch never changes what it
/// holds or where it comes in the sequence.
/// </summary>
internal static class BatchPrefetcher
{
    public static IEnumerable<TaskBatch> Run(IEnumerable<long[]> batches, Func<long[], TaskBatch> load, int threads, int capacity)
    {
        var channel = Channel.CreateBounded<Task<TaskBatch>>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        using var cancellation = new CancellationTokenSource();
        using var gate = new SemaphoreSlim(threads, threads);
        var token = cancellation.Token;
        var producer = Task.Run(async () =>
        {
            try
            {
                foreach (var indices in batches)
                {
                    await gate.WaitAsync(token).ConfigureAwait(false);
                    var job = Task.Factory.StartNew(
                        () =>
                        {
                            try
                            {
                                return load(indices);
                            }
                            finally
                            {
                                gate.Release();
                            }
                        },
                        CancellationToken.None,
                        TaskCreationOptions.DenyChildAttach,
                        TaskScheduler.Default);
                    try
                    {
                        await channel.Writer.WriteAsync(job, token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        _ = job.ContinueWith(DisposeResult, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
                        throw;
                    }
                }
                channel.Writer.TryComplete();
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e is OperationCanceledException ? null : e);
            }
        });

        try
        {
            while (ReadNext(channel.Reader) is { } job)
            {
                yield return job.GetAwaiter().GetResult();
            }
        }
        finally
        {
            cancellation.Cancel();
            try
            {
                producer.GetAwaiter().GetResult();
            }
            catch (Exception)
            {
                // The producer reports its failures through the channel.
            }
            while (channel.Reader.TryRead(out var pending))
            {
                DisposeResult(pending);
            }
        }
    }

    private static Task<TaskBatch>? ReadNext(ChannelReader<Task<TaskBatch>> reader)
    {
        // WaitToReadAsync rethrows the producer's failure once the queue is drained.
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            if (reader.TryRead(out var job))
            {
                return job;
            }
        }
        return null;
    }

    private static void DisposeResult(Task<TaskBatch> job)
    {
        try
        {
            job.GetAwaiter().GetResult().Dispose();
        }
        catch (Exception)
        {
            // A failed load left nothing to dispose; its error is not the consumer's any more.
        }
    }
}
