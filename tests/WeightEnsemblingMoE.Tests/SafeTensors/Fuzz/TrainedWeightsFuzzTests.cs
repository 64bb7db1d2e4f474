using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tests.SafeTensors.Reliability;
using WeightEnsembling.Training;
using WeightEnsembling.Upscaling;
using WeightEnsembling.Merging;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.SafeTensors.Fuzz;

/// <summary>
/// A seeded mutation fuzzer over the saved trained weights (issue 18): router folders (<c>upscaled_model_config.json</c> +
/// <c>weights-*.safetensors</c>), AdaMerging folders (<c>adamerging_config.json</c> + weights) and training checkpoint
/// folders (the router folder + <c>optimizer.safetensors</c> + <c>trainer_state.json</c>).
/// Each case starts from a real save and mutates its configuration JSON, its weights file (the configuration left as it
/// was, or re-signed with the mutated file's name and SHA-256, as a buggy or hostile writer would), or, for a checkpoint,
/// its <c>trainer_state.json</c> or its <c>optimizer.safetensors</c> (unsigned: its values are what a load must give). The same knobs as <see cref="SafeTensorsFuzzTests"/>: <c>WEMOE_FUZZ_CASES</c> (N gives N/10
/// cases per target), <c>WEMOE_FUZZ_SEED</c>, <c>WEMOE_FUZZ_DUMP</c> (keeps every case's files and outcome).
/// </summary>
/// <remarks>
/// Oracle. A load must either throw one of the clean types (<see cref="InvalidDataException"/>,
/// <see cref="SafeTensorsFormatException"/>, <see cref="FileNotFoundException"/>) with a message naming the file or folder,
/// or succeed; a successful load must give bit-identical tensors to the original save when the weights are untouched
/// (a neutral mutation of the configuration), and otherwise exactly what the mutated file holds (decoded independently
/// for F32; the file must be one the reference accepts, <see cref="ReferenceOracle"/>), all finite. Failures:
/// foreign-exception, unnamed-file, accepted-but-different, accepted-but-reference-rejects, accepted-non-finite. A crash
/// or hang takes the run down and so fails it.
/// </remarks>
[TestFixture, NonParallelizable]
public sealed class TrainedWeightsFuzzTests
{
    private static int Cases => int.TryParse(Environment.GetEnvironmentVariable("WEMOE_FUZZ_CASES"), out var n) ? Math.Max(1, n / 10) : 300;

    private static int Seed => int.TryParse(Environment.GetEnvironmentVariable("WEMOE_FUZZ_SEED"), out var n) ? n : 18;

    private static readonly string? Dump = Environment.GetEnvironmentVariable("WEMOE_FUZZ_DUMP");

    private TempFolder _folder = null!;
    private TrainedWeightsStates _states = null!;

    [SetUp]
    public void SetUp()
    {
        _folder = new TempFolder();
        _states = new TrainedWeightsStates();
    }

    [TearDown]
    public void TearDown()
    {
        _states.Dispose();
        _folder.Dispose();
    }

    private sealed class Outcomes
    {
        public readonly SortedDictionary<string, int> Counts = new(StringComparer.Ordinal);
        public readonly List<string> Failures = [];

        public void Add(string outcome, string? failure = null)
        {
            Counts[outcome] = Counts.GetValueOrDefault(outcome) + 1;
            if (failure is not null && Failures.Count < 20)
            {
                Failures.Add($"{outcome}: {failure}");
            }
        }

        public override string ToString() => string.Join(", ", Counts.Select(p => $"{p.Key} {p.Value}"));
    }

    private static readonly string[] Replacements = ["NaN", "Inf", "-Inf", "-0", "1e30", "1e-45"];

    /// <summary>Splits a safetensors file into its header text and data bytes.</summary>
    private static (string Header, byte[] Data) Split(byte[] file)
    {
        var length = (int)BinaryPrimitives.ReadUInt64LittleEndian(file);
        return (Encoding.UTF8.GetString(file, 8, length), file[(8 + length)..]);
    }

    private static byte[] Join(string header, byte[] data)
    {
        var bytes = Encoding.UTF8.GetBytes(header);
        var file = new byte[8 + bytes.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)bytes.Length);
        bytes.CopyTo(file, 8);
        data.CopyTo(file, 8 + bytes.Length);
        return file;
    }

    /// <summary>One mutation of a safetensors file's bytes; returns the new bytes and what was done.</summary>
    private static (byte[] File, string What) MutateWeights(byte[] file, Random random)
    {
        var (header, data) = Split(file);
        switch (random.Next(7))
        {
            case 0:
            {
                var mutated = header;
                for (var m = random.Next(1, 3); m > 0; m--)
                {
                    mutated = SafeTensorsFuzzTests.Mutate(mutated, random);
                }
                return (Join(mutated, data), $"header: {Truncate(mutated)}");
            }
            case 1:
            {
                if (data.Length < 4) return (file, "none");
                var at = random.Next(data.Length / 4) * 4;
                var value = Replacements[random.Next(Replacements.Length)] switch
                {
                    "NaN" => float.NaN,
                    "Inf" => float.PositiveInfinity,
                    "-Inf" => float.NegativeInfinity,
                    "-0" => -0f,
                    "1e30" => 1e30f,
                    _ => float.Epsilon,
                };
                var copy = (byte[])data.Clone();
                BinaryPrimitives.WriteSingleLittleEndian(copy.AsSpan(at), value);
                return (Join(header, copy), $"data[{at}] = {value}");
            }
            case 2:
            {
                var copy = (byte[])file.Clone();
                var at = random.Next(copy.Length);
                copy[at] ^= (byte)(1 << random.Next(8));
                return (copy, $"bit flip at {at}");
            }
            case 3:
            {
                var length = random.Next(2) == 0 ? random.Next(file.Length) : file.Length + random.Next(1, 9);
                var copy = new byte[length];
                file.AsSpan(0, Math.Min(length, file.Length)).CopyTo(copy);
                return (copy, $"length {file.Length} -> {length}");
            }
            case 4:
            {
                var dtype = new[] { "I32", "U32", "F16", "BF16", "F64", "U8" }[random.Next(6)];
                var at = header.IndexOf("\"F32\"", StringComparison.Ordinal);
                return at < 0 ? (file, "none") : (Join(header[..at] + $"\"{dtype}\"" + header[(at + 5)..], data), $"first dtype -> {dtype}");
            }
            case 5:
            {
                // Swap the two dimensions of a rank-2 shape: the same bytes as a transposed tensor.
                var shapes = System.Text.RegularExpressions.Regex.Matches(header, "\"shape\":\\[(\\d+),(\\d+)\\]");
                if (shapes.Count == 0) return (file, "none");
                var match = shapes[random.Next(shapes.Count)];
                var swapped = $"\"shape\":[{match.Groups[2].Value},{match.Groups[1].Value}]";
                return (Join(header[..match.Index] + swapped + header[(match.Index + match.Length)..], data), $"{match.Value} -> {swapped}");
            }
            default:
            {
                var at = header.IndexOf(".weight\"", StringComparison.Ordinal);
                return at < 0 ? (file, "none") : (Join(header[..at] + ".weigh\"" + header[(at + 8)..], data), "a tensor renamed");
            }
        }
    }

    private static string Truncate(string text) => text.Length <= 200 ? text : text[..200] + "…";

    private static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    /// <summary>The tensors a file holds by the reference's reading, F32 decoded here from the bytes, others by our reader.</summary>
    private static Dictionary<string, Tensor> FileTensors(byte[] file, ReferenceOracle.Verdict verdict, string path)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var dataStart = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(file);
        using var reader = SafeTensorsFile.Open(path);
        foreach (var (name, info) in verdict.Tensors!)
        {
            if (info.DType == "F32")
            {
                var floats = MemoryMarshal.Cast<byte, float>(file.AsSpan(dataStart + (int)info.Begin, (int)(info.End - info.Begin))).ToArray();
                result[name] = tensor(floats).reshape(info.Shape.Select(d => (long)d).ToArray());
            }
            else
            {
                result[name] = reader.Load(name);
            }
        }
        return result;
    }

    private static bool SameValues(IReadOnlyDictionary<string, Tensor> actual, IReadOnlyDictionary<string, Tensor> expected) =>
        actual.Keys.Order(StringComparer.Ordinal).SequenceEqual(expected.Keys.Order(StringComparer.Ordinal))
        && expected.All(e =>
        {
            using var converted = e.Value.to(actual[e.Key].dtype);
            return actual[e.Key].shape.SequenceEqual(e.Value.shape) && Upscaling.TinyClip.BitEqual(actual[e.Key], converted);
        });

    private static void DisposeAll(IEnumerable<Tensor> tensors)
    {
        foreach (var t in tensors)
        {
            t.Dispose();
        }
    }

    /// <summary>Classifies one load attempt; <paramref name="load"/> returns the loaded tensors (owned by the caller).</summary>
    private static void Classify(Outcomes outcomes, string describe, string namedPath, Func<Dictionary<string, Tensor>> load,
        IReadOnlyDictionary<string, Tensor> original, byte[]? changedWeights, string weightsPath)
    {
        Dictionary<string, Tensor> loaded;
        try
        {
            loaded = load();
        }
        catch (Exception ex) when (ex is InvalidDataException or SafeTensorsFormatException or FileNotFoundException)
        {
            if (ex.Message.Contains(namedPath, StringComparison.Ordinal))
            {
                outcomes.Add("clean-rejection");
            }
            else
            {
                outcomes.Add("unnamed-file", $"{describe}; {ex.GetType().Name}: {ex.Message}");
            }
            return;
        }
        catch (Exception ex)
        {
            outcomes.Add("foreign-exception", $"{describe}; {ex.GetType().Name}: {ex.Message}");
            return;
        }

        try
        {
            if (loaded.Values.Any(t => t.is_floating_point() && !t.isfinite().all().item<bool>()))
            {
                outcomes.Add("accepted-non-finite", describe);
            }
            else if (changedWeights is null)
            {
                outcomes.Add(SameValues(loaded, original) ? "accepted-equal" : "accepted-but-different", SameValues(loaded, original) ? null : describe);
            }
            else
            {
                var verdict = ReferenceOracle.Check(changedWeights);
                if (!verdict.Accepted)
                {
                    outcomes.Add("accepted-but-reference-rejects", $"{describe}; reference: {verdict.Reason}");
                    return;
                }
                var expected = FileTensors(changedWeights, verdict, weightsPath);
                var same = SameValues(loaded, expected);
                DisposeAll(expected.Values);
                outcomes.Add(same ? (SameValues(loaded, original) ? "accepted-equal" : "accepted-file-values") : "accepted-but-different", same ? null : describe);
            }
        }
        finally
        {
            DisposeAll(loaded.Values);
        }
    }

    private static void DumpCase(string target, int i, string caseFolder, string outcome, string what)
    {
        if (Dump is null) return;
        var destination = Directory.CreateDirectory(Path.Combine(Dump, "trained", $"{target}-{i:D6}")).FullName;
        foreach (var file in Directory.GetFiles(caseFolder))
        {
            File.Copy(file, Path.Combine(destination, Path.GetFileName(file)), overwrite: true);
        }
        File.AppendAllText(Path.Combine(Dump, "trained-verdicts.tsv"), $"{target}\t{i}\t{outcome}\t{what.Replace('\t', ' ').Replace('\n', ' ')}\n");
    }

    /// <summary>
    /// Fuzzes a saved folder: each case copies the original save into a fresh folder, mutates the configuration or the
    /// weights (plain or re-signed), then loads it with <paramref name="load"/>.
    /// </summary>
    private Outcomes FuzzFolder(string target, string original, string configFileName, IReadOnlyDictionary<string, Tensor> originalTensors,
        Func<string, int, Dictionary<string, Tensor>> load, int seed)
    {
        var random = new Random(seed);
        var outcomes = new Outcomes();
        var configText = File.ReadAllText(Path.Combine(original, configFileName));
        var weightsName = JsonNode.Parse(configText)!["weights_file"]!.GetValue<string>();
        var weightsBytes = File.ReadAllBytes(Path.Combine(original, weightsName));
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < Cases; i++)
        {
            var folder = Path.Combine(_folder.Path, $"{target}-case");
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, recursive: true);
            }
            Directory.CreateDirectory(folder);
            var config = configText;
            var weightsFile = weightsName;
            var weights = weightsBytes;
            byte[]? changed = null;
            string what;
            var kind = random.Next(10);
            if (kind < 5)
            {
                for (var m = random.Next(1, 4); m > 0; m--)
                {
                    config = SafeTensorsFuzzTests.Mutate(config, random);
                }
                what = $"config: {Truncate(config)}";
            }
            else
            {
                (weights, what) = MutateWeights(weightsBytes, random);
                if (kind >= 7)
                {
                    // Re-signed: the configuration names the mutated file by its own hash, as a writer would.
                    var sha = Sha256(weights);
                    weightsFile = $"weights-{sha[..16]}.safetensors";
                    var node = JsonNode.Parse(configText)!;
                    node["weights_file"] = weightsFile;
                    node["weights_sha256"] = sha;
                    config = node.ToJsonString();
                    what = $"re-signed {what}";
                    changed = weights;
                }
                else
                {
                    what = $"weights: {what}";
                }
            }
            File.WriteAllText(Path.Combine(folder, configFileName), config);
            var weightsPath = Path.Combine(folder, weightsFile);
            File.WriteAllBytes(weightsPath, weights);
            var before = outcomes.Counts.ToDictionary(p => p.Key, p => p.Value);
            Classify(outcomes, $"{target} case {i}: {what}", folder, () => load(folder, i), originalTensors, changed, weightsPath);
            DumpCase(target, i, folder, outcomes.Counts.First(p => before.GetValueOrDefault(p.Key) != p.Value).Key, what);
        }
        TestContext.Out.WriteLine($"{target}: {Cases} cases, seed {seed}, {clock.Elapsed.TotalSeconds:F1} s: {outcomes}");
        return outcomes;
    }

    [Test]
    public void RouterFolder_MutatedConfigAndWeights_LoadIdenticalOrRejectCleanly()
    {
        using var source = _states.Upscaled(0);
        var original = Path.Combine(_folder.Path, "routers-original");
        source.SavePretrained(original);
        var expected = source.RouterStateDict();
        using var target = _states.Upscaled(0);
        var reset = expected.ToDictionary(p => p.Key, p => p.Value + 1, StringComparer.Ordinal);
        var outcomes = FuzzFolder("routers", original, UpscaledModelConfig.FileName, expected, (folder, i) =>
        {
            if (i % 10 == 0)
            {
                // Every tenth case rebuilds the model from the folder: the options are read from the configuration.
                using var rebuilt = UpscaledModel.FromPretrained(folder, _states.Pool());
                return rebuilt.RouterStateDict();
            }
            target.LoadRouterStateDict(reset);
            target.LoadPretrained(folder);
            return target.RouterStateDict();
        }, Seed + 10);
        DisposeAll(expected.Values);
        DisposeAll(reset.Values);
        AssertOutcomes(outcomes);
    }

    [Test]
    public void AdaMergingFolder_MutatedConfigAndWeights_LoadIdenticalOrRejectCleanly()
    {
        using var source = _states.AdaMerging(1);
        var original = Path.Combine(_folder.Path, "adamerging-original");
        source.SavePretrained(original);
        var expected = new Dictionary<string, Tensor> { ["merge_weight"] = source.MergeWeight.detach().clone() };
        using var target = _states.AdaMerging(1);
        var outcomes = FuzzFolder("adamerging", original, AdaMergingModel.ConfigFileName, expected, (folder, i) =>
        {
            if (i % 10 == 0)
            {
                using var rebuilt = AdaMergingModel.FromPretrained(folder, _states.Pool());
                return new Dictionary<string, Tensor> { ["merge_weight"] = rebuilt.MergeWeight.detach().clone() };
            }
            using (no_grad())
            {
                target.MergeWeight.fill_(7);
            }
            target.LoadPretrained(folder);
            return new Dictionary<string, Tensor> { ["merge_weight"] = target.MergeWeight.detach().clone() };
        }, Seed + 11);
        DisposeAll(expected.Values);
        AssertOutcomes(outcomes);
    }

    [Test]
    public void TrainingCheckpoint_MutatedTrainerStateOptimizerAndWeights_LoadsFileValuesOrRejectsCleanly()
    {
        var original = Path.Combine(_folder.Path, "checkpoint-original");
        Dictionary<string, Tensor> expected;
        using (var source = TrainingCheckpointState.Trained(_states, 1))
        {
            source.Save(original);
            expected = source.Snapshot(TrainedWeightsStates.Step(1));
        }

        var files = Directory.GetFiles(original).ToDictionary(f => Path.GetFileName(f)!, File.ReadAllBytes, StringComparer.Ordinal);
        var configText = Encoding.UTF8.GetString(files[UpscaledModelConfig.FileName]);
        var weightsName = JsonNode.Parse(configText)!["weights_file"]!.GetValue<string>();
        var stateText = Encoding.UTF8.GetString(files[TrainerState.FileName]);
        using var target = TrainingCheckpointState.Fresh(_states);
        var random = new Random(Seed + 12);
        var outcomes = new Outcomes();
        var clock = Stopwatch.StartNew();
        var folder = Path.Combine(_folder.Path, "checkpoint-case");
        for (var i = 0; i < Cases; i++)
        {
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, recursive: true);
            }
            Directory.CreateDirectory(folder);
            var mutated = new Dictionary<string, byte[]>(files, StringComparer.Ordinal);
            string what;
            string? changedFile = null; // a safetensors file whose mutated values a successful load must give
            var expectedStep = (long)TrainedWeightsStates.Step(1);
            var kind = random.Next(10);
            if (kind < 3)
            {
                var text = stateText;
                for (var m = random.Next(1, 4); m > 0; m--)
                {
                    text = SafeTensorsFuzzTests.Mutate(text, random);
                }
                mutated[TrainerState.FileName] = Encoding.UTF8.GetBytes(text);
                expectedStep = IndependentStep(mutated[TrainerState.FileName]);
                what = $"trainer state: {Truncate(text)}";
            }
            else if (kind < 6)
            {
                (mutated[TrainingCheckpoint.OptimizerFileName], what) = MutateWeights(files[TrainingCheckpoint.OptimizerFileName], random);
                changedFile = TrainingCheckpoint.OptimizerFileName;
                what = $"optimizer: {what}";
            }
            else if (kind < 8)
            {
                var config = configText;
                for (var m = random.Next(1, 4); m > 0; m--)
                {
                    config = SafeTensorsFuzzTests.Mutate(config, random);
                }
                mutated[UpscaledModelConfig.FileName] = Encoding.UTF8.GetBytes(config);
                what = $"config: {Truncate(config)}";
            }
            else
            {
                (var weights, what) = MutateWeights(files[weightsName], random);
                if (kind == 9)
                {
                    // Re-signed: the configuration names the mutated file by its own hash, as a writer would.
                    var sha = Sha256(weights);
                    var renamed = $"weights-{sha[..16]}.safetensors";
                    var node = JsonNode.Parse(configText)!;
                    node["weights_file"] = renamed;
                    node["weights_sha256"] = sha;
                    mutated.Remove(weightsName);
                    mutated[renamed] = weights;
                    mutated[UpscaledModelConfig.FileName] = Encoding.UTF8.GetBytes(node.ToJsonString());
                    changedFile = renamed;
                    what = $"re-signed weights: {what}";
                }
                else
                {
                    mutated[weightsName] = weights;
                    what = $"weights: {what}";
                }
            }

            foreach (var (name, bytes) in mutated)
            {
                File.WriteAllBytes(Path.Combine(folder, name), bytes);
            }

            target.Reset(7);
            var before = outcomes.Counts.ToDictionary(p => p.Key, p => p.Value);
            var describe = $"checkpoint case {i}: {what}";
            Dictionary<string, Tensor> loaded;
            try
            {
                loaded = target.Snapshot(target.Load(folder));
            }
            catch (Exception ex) when (ex is InvalidDataException or SafeTensorsFormatException or FileNotFoundException)
            {
                outcomes.Add(ex.Message.Contains(folder, StringComparison.Ordinal) ? "clean-rejection" : "unnamed-file",
                    ex.Message.Contains(folder, StringComparison.Ordinal) ? null : $"{describe}; {ex.GetType().Name}: {ex.Message}");
                loaded = null!;
            }
            catch (Exception ex)
            {
                outcomes.Add("foreign-exception", $"{describe}; {ex.GetType().Name}: {ex.Message}");
                loaded = null!;
            }

            if (loaded is not null)
            {
                ClassifyCheckpointLoad(outcomes, describe, loaded, expected, expectedStep, changedFile is null ? null : (mutated[changedFile], Path.Combine(folder, changedFile)));
                DisposeAll(loaded.Values);
            }
            DumpCase("checkpoint", i, folder, outcomes.Counts.First(p => before.GetValueOrDefault(p.Key) != p.Value).Key, what);
        }
        TestContext.Out.WriteLine($"checkpoint: {Cases} cases, seed {Seed + 12}, {clock.Elapsed.TotalSeconds:F1} s: {outcomes}");
        DisposeAll(expected.Values);
        AssertOutcomes(outcomes);
    }

    /// <summary>
    /// The <c>step</c> of a trainer state file read with <see cref="JsonDocument"/> from its UTF-8 bytes (after a leading
    /// byte-order mark, which RFC 8259 lets a reader ignore and <see cref="File.ReadAllText(string)"/> drops), or -1 when
    /// it has none.
    /// </summary>
    private static long IndependentStep(byte[] file)
    {
        try
        {
            var bom = file.AsSpan().StartsWith(Encoding.UTF8.Preamble) ? 3 : 0;
            using var document = JsonDocument.Parse(file.AsMemory(bom));
            return document.RootElement.ValueKind == JsonValueKind.Object
                && document.RootElement.TryGetProperty("step", out var step)
                && step.ValueKind == JsonValueKind.Number
                && step.TryGetInt32(out var value) ? value : -1;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            // InvalidOperationException: a key holds a lone surrogate escape (System.Text.Json decodes keys on lookup).
            return -1;
        }
    }

    /// <summary>
    /// A checkpoint load that succeeded must give the original snapshot, except for what the mutation changed: the step of
    /// a mutated trainer state as it reads, the tensors of a mutated optimizer or re-signed weights file as the file holds
    /// them (by the reference reader), all finite.
    /// </summary>
    private static void ClassifyCheckpointLoad(Outcomes outcomes, string describe, Dictionary<string, Tensor> loaded,
        Dictionary<string, Tensor> original, long expectedStep, (byte[] Bytes, string Path)? changed)
    {
        if (loaded.Values.Any(t => t.is_floating_point() && !t.isfinite().all().item<bool>()))
        {
            outcomes.Add("accepted-non-finite", describe);
            return;
        }

        var expected = new Dictionary<string, Tensor>(original, StringComparer.Ordinal);
        using var step = tensor(expectedStep, ScalarType.Int64);
        expected[TrainingCheckpointState.TrainerStepKey] = step;
        Dictionary<string, Tensor>? fileTensors = null;
        if (changed is { } file)
        {
            var verdict = ReferenceOracle.Check(file.Bytes);
            if (!verdict.Accepted)
            {
                outcomes.Add("accepted-but-reference-rejects", $"{describe}; reference: {verdict.Reason}");
                return;
            }
            fileTensors = FileTensors(file.Bytes, verdict, file.Path);
            var optimizer = Path.GetFileName(file.Path) == TrainingCheckpoint.OptimizerFileName;
            foreach (var key in expected.Keys.Where(k => optimizer ? k.StartsWith("exp_avg", StringComparison.Ordinal) || k.StartsWith("step.", StringComparison.Ordinal) : k.StartsWith("vision_model.", StringComparison.Ordinal)).ToList())
            {
                expected.Remove(key);
            }
            foreach (var (key, value) in fileTensors)
            {
                expected[key] = value;
            }
        }

        var same = SameValues(loaded, expected);
        outcomes.Add(same ? (SameValues(loaded, original) ? "accepted-equal" : "accepted-file-values") : "accepted-but-different", same ? null : describe);
        if (fileTensors is not null)
        {
            DisposeAll(fileTensors.Values);
        }
    }

    private static void AssertOutcomes(Outcomes outcomes)
    {
        Assert.That(outcomes.Failures, Is.Empty);
        Assert.That(outcomes.Counts.GetValueOrDefault("accepted-equal"), Is.GreaterThan(0), "some mutations must be neutral");
        Assert.That(outcomes.Counts.GetValueOrDefault("clean-rejection"), Is.GreaterThan(Cases / 10));
    }
}
