using WeightEnsembling.Tests.SafeTensors.Reliability;

namespace WeightEnsembling.Tests;

/// <summary>
/// The test assembly's entry point (Microsoft.NET.Test.Sdk's generated one is turned off): the test runner never calls
/// it; the kill tests start the assembly as a child process (<c>dotnet exec WeightEnsemblingMoE.Tests.dll atomic-save MODE FOLDER</c>)
/// that saves in a loop until it is killed.
/// </summary>
public static class HelperProgram
{
    public static int Main(string[] args)
    {
        if (args.Length == 3 && args[0] == "atomic-save")
        {
            return args[1] is "routers" or "adamerging" or "checkpoint"
                ? TrainedWeightsStates.Run(args[1], args[2])
                : AtomicSaveLoop.Run(args[1], args[2]);
        }
        Console.Error.WriteLine("usage: atomic-save sharded|clip|routers|adamerging|checkpoint TARGET");
        return 2;
    }
}
