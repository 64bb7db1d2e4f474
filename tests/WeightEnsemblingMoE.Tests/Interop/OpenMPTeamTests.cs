using System.Collections.Concurrent;
using TorchSharp;
using WeightEnsembling.Interop;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Interop;

[TestFixture, NonParallelizable]
public sealed class OpenMPTeamTests
{
    [OneTimeSetUp]
    public void LoadLibTorch()
    {
        // libgomp is loaded with libtorch: make sure it is before the team looks for it.
        using var warm = ones(4).sum();
    }

    [TearDown]
    public void TearDown() => OpenMPTeam.Enabled = true;

    [Test]
    public void IsAvailable_OnLinuxWithLibTorch_FindsLibgomp()
    {
        Assume.That(OperatingSystem.IsLinux(), "libtorch's CPU package for Linux ships GNU OpenMP");
        Assert.That(OpenMPTeam.IsAvailable, Is.True, "GOMP_parallel was not found in the loaded libgomp");
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(5)]
    public void For_RunsEveryPartOnce(int parts)
    {
        var seen = new ConcurrentBag<int>();
        OpenMPTeam.For(parts, seen.Add);
        Assert.That(seen.OrderBy(p => p), Is.EqualTo(Enumerable.Range(0, parts)));
    }

    [Test]
    public void For_WithTwoParts_RunsThemOnTwoThreads()
    {
        Assume.That(OpenMPTeam.IsAvailable && Environment.ProcessorCount >= 2);
        var threads = new ConcurrentBag<int>();
        using var barrier = new Barrier(2);
        OpenMPTeam.For(2, _ =>
        {
            threads.Add(Environment.CurrentManagedThreadId);
            Assert.That(barrier.SignalAndWait(TimeSpan.FromSeconds(30)), Is.True, "the two parts did not run at the same time");
        });
        Assert.That(threads.Distinct().Count(), Is.EqualTo(2));
    }

    [Test]
    public void For_PartThrows_RethrowsOnCaller()
    {
        var error = Assert.Throws<InvalidOperationException>(() => OpenMPTeam.For(3, part =>
        {
            if (part == 1)
            {
                throw new InvalidOperationException("part 1 failed");
            }
        }));
        Assert.That(error!.Message, Is.EqualTo("part 1 failed"));
    }

    [Test]
    public void For_Disabled_RunsOnThreadPool()
    {
        OpenMPTeam.Enabled = false;
        var seen = new ConcurrentBag<int>();
        OpenMPTeam.For(3, seen.Add);
        Assert.That(seen.OrderBy(p => p), Is.EqualTo(Enumerable.Range(0, 3)));
    }
}
