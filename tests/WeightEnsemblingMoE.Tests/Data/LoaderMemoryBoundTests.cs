using WeightEnsembling.Data;
using WeightEnsembling.Images;

namespace WeightEnsembling.Tests.Data;

/// <summary>
/// The loader's memory is bounded by its queue, not by the dataset: while a consumer walks a dataset 100 times larger
/// than the queue (and slower than the loader threads), the images decoded but not yet handed out never exceed
/// (<see cref="DataLoaderOptions.PrefetchBatches"/> + 1) batches: the queued loads plus the one the producer holds while
/// it waits for room. No timing is asserted; the consumer only pauses to let the loaders run ahead.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class LoaderMemoryBoundTests
{
    [TestCase(1, 1)]
    [TestCase(2, 3)]
    public void Prefetch_HoldsAtMostTheQueueAheadOfTheConsumer(int threads, int prefetch)
    {
        const int batchSize = 4;
        const long count = 400;
        using var data = new CountingDataset(count, new DataLoaderOptions { LoaderThreads = threads, PrefetchBatches = prefetch });
        long consumed = 0, maxAhead = 0, peakLive = 0;
        long bound = (prefetch + 1L) * batchSize;
        long liveBefore = TorchSharp.torch.Tensor.TotalCount;

        foreach (var batch in data.Batches(batchSize, shuffle: true, seed: 3))
        {
            using (batch)
            {
                consumed += batch.Count;
                maxAhead = Math.Max(maxAhead, data.Decoded - consumed);
                peakLive = Math.Max(peakLive, TorchSharp.torch.Tensor.TotalCount - liveBefore);
                if (consumed % 40 == 0)
                {
                    Thread.Sleep(20); // let the loaders fill the queue
                    maxAhead = Math.Max(maxAhead, data.Decoded - consumed);
                    peakLive = Math.Max(peakLive, TorchSharp.torch.Tensor.TotalCount - liveBefore);
                }
            }
        }

        TestContext.Out.WriteLine($"threads {threads}, queue {prefetch}: at most {maxAhead} images decoded ahead (bound {bound}), at most {peakLive} live tensors");
        Assert.That(consumed, Is.EqualTo(count));
        Assert.That(data.Decoded, Is.EqualTo(count));
        Assert.That(maxAhead, Is.LessThanOrEqualTo(bound), "images decoded ahead of the consumer");
        // Images + labels of the queued, pending and current batches, plus the intermediates of loads in flight.
        Assert.That(peakLive, Is.LessThanOrEqualTo((2 * (prefetch + 2)) + (8 * threads)), "live tensors");
    }

    private sealed class CountingDataset(long count, DataLoaderOptions options) : StreamingImageDataset("counting", 2, DataFixtures.Processor, options)
    {
        private long decoded;

        public override long Count => count;

        public override bool HasLabels => true;

        public long Decoded => Interlocked.Read(ref decoded);

        protected override RgbImage ReadImage(long index)
        {
            Interlocked.Increment(ref decoded);
            var pixels = new byte[30 * 26 * 3];
            Array.Fill(pixels, (byte)(index % 251));
            return new RgbImage(30, 26, pixels);
        }

        protected override long LabelOf(long index) => index % 2;
    }
}
