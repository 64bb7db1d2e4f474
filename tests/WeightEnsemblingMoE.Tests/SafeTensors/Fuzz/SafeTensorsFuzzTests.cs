using System.Diagnostics;
using System.Globalization;
using System.Text;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;

namespace WeightEnsembling.Tests.SafeTensors.Fuzz;

/// <summary>
/// A seeded mutation fuzzer over the safetensors reader (against <see cref="ReferenceOracle"/>), the sharded index and the
/// CLIP config reader. The bounded run is part of the suite; set <c>WEMOE_FUZZ_CASES</c> (cases per target) and
/// <c>WEMOE_FUZZ_SEED</c> for a longer run, and <c>WEMOE_FUZZ_DUMP</c> to a folder to keep every safetensors case with the
/// oracle's verdict (to check the oracle against the reference crate, docs/reliability.md).
/// </summary>
/// <remarks>
/// Outcome classes: accepted-equal (both accept, same tensors and metadata), clean-rejection (both reject; ours is a
/// documented exception naming the file), stricter-on-purpose (the reference accepts, we refuse by a listed rule),
/// foreign-exception, memory-beyond-bound, accepted-but-reference-rejects, accepted-but-different,
/// rejected-by-unlisted-rule. The test fails on any case of the last five. A crash or hang takes the test run down
/// with it and so fails too.
/// </remarks>
[TestFixture, NonParallelizable]
public sealed class SafeTensorsFuzzTests
{
    /// <summary>Where we refuse what the reference accepts, on purpose; the key is a phrase of our message.</summary>
    public static readonly IReadOnlyDictionary<string, string> StricterRules = new Dictionary<string, string>
    {
        ["appears more than once in the header"] = "a tensor name twice: the reference keeps the last entry silently; we refuse the ambiguity",
        ["'__metadata__' has the key '"] = "a __metadata__ key twice: the reference keeps the last value; we refuse the ambiguity",
        ["does not support"] = "dtypes of the format without a TorchSharp type (F4, F6_*, F8_E8M0, F8_*FNUZ, C64): nothing could load them",
        ["libtorch cannot represent"] = "an empty tensor whose dimension or contiguous stride exceeds 2^63 − 1: libtorch cannot create it",
        ["the limit (SafeTensorsReadOptions."] = "the configurable limits on tensors, rank, name length and metadata entries",
        ["is not an object with dtype"] = "a tensor entry written as a sequence [dtype, shape, offsets] (serde accepts it for a struct; no writer produces it)",
        ["has no string 'dtype'"] = "a dtype written as {\"F32\": null} (serde's map form of an enum; no writer produces it)",
    };

    private static int Cases => int.TryParse(Environment.GetEnvironmentVariable("WEMOE_FUZZ_CASES"), out var n) ? n : 3000;

    private static int Seed => int.TryParse(Environment.GetEnvironmentVariable("WEMOE_FUZZ_SEED"), out var n) ? n : 18;

    private TempFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new TempFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    private static readonly string[] OurDTypes = ["BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"];
    private static readonly string[] OtherDTypes = ["F4", "F6_E2M3", "F8_E8M0", "C64"];

    internal static readonly string[] Numbers =
    [
        "0", "1", "2", "3", "-0", "-1", "1.0", "1e2", "1e400", "01", "4", "8", "18446744073709551615", "18446744073709551616",
        "4611686018427387904", "9223372036854775807", "9223372036854775808", "3037000500", "4294967296",
    ];

    private static readonly string[] Strings =
    [
        "\"\\ud800\"", "\"\\udc00\"", "\"\\ud83d\\ude00\"", "\"F32\"", "\"C64\"", "\"F4\"", "\"__metadata__\"", "\"\"", "\"BOOL\"",
        "\"U16\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"\\u0064type\"", "\"\\ud800\\u0041\"", "\"a\"",
    ];

    /// <summary>A valid file: its header text and data bytes.</summary>
    private static (string Header, byte[] Data) MakeSeed(Random random)
    {
        var entries = new List<string>();
        var data = new List<byte>();
        var count = random.Next(0, 5);
        for (var i = 0; i < count; i++)
        {
            var dtype = random.Next(10) == 0 ? OtherDTypes[random.Next(OtherDTypes.Length)] : OurDTypes[random.Next(OurDTypes.Length)];
            var rank = random.Next(0, 4);
            var shape = Enumerable.Range(0, rank).Select(_ => (ulong)random.Next(0, 4)).ToArray();
            if (dtype is "F4" or "F6_E2M3")
            {
                shape = [.. shape.Select(_ => 2UL)];
            }
            var bits = (ulong)ReferenceOracle.BitSizes[dtype] * shape.Aggregate(1UL, (a, b) => a * b);
            var bytes = (int)(bits / 8);
            var begin = data.Count;
            for (var k = 0; k < bytes; k++)
            {
                data.Add(dtype == "BOOL" ? (byte)random.Next(2) : (byte)random.Next(256));
            }
            var fields = new List<string>
            {
                $"\"dtype\":\"{dtype}\"",
                $"\"shape\":[{string.Join(",", shape)}]",
                $"\"data_offsets\":[{begin},{data.Count}]",
            };
            if (random.Next(6) == 0)
            {
                fields.Add("\"extra\":{\"x\":[1,2.5,\"s\",null,true]}");
            }
            fields = [.. fields.OrderBy(_ => random.Next())];
            entries.Add($"\"t{i}.{(char)('a' + random.Next(26))}\":{{{string.Join(",", fields)}}}");
        }
        if (random.Next(3) == 0)
        {
            entries.Insert(random.Next(entries.Count + 1), "\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\\u00e9\"}");
        }
        return ("{" + string.Join(",", entries) + "}", data.ToArray());
    }

    /// <summary>One random mutation of a JSON text (shared with <see cref="TrainedWeightsFuzzTests"/>).</summary>
    internal static string Mutate(string text, Random random)
    {
        switch (random.Next(12))
        {
            case 0: // Replace a number.
            {
                var spans = Tokens(text, number: true);
                if (spans.Count == 0) return text;
                var (s, e) = spans[random.Next(spans.Count)];
                return text[..s] + Numbers[random.Next(Numbers.Length)] + text[e..];
            }
            case 1: // Replace a string.
            {
                var spans = Tokens(text, number: false);
                if (spans.Count == 0) return text;
                var (s, e) = spans[random.Next(spans.Count)];
                return text[..s] + Strings[random.Next(Strings.Length)] + text[e..];
            }
            case 2: // Repeat a member of an object (a field or a whole tensor entry).
            {
                var spans = Tokens(text, number: false);
                var keys = spans.Where(p => p.End < text.Length && text[p.End] == ':').ToList();
                if (keys.Count == 0) return text;
                var (s, _) = keys[random.Next(keys.Count)];
                var end = ValueEnd(text, text.IndexOf(':', s) + 1);
                return end < s || end > text.Length ? text : text[..end] + "," + text[s..end] + text[end..];
            }
            case 3: // Whitespace somewhere (legal between tokens only).
                return text.Insert(random.Next(text.Length + 1), random.Next(2) == 0 ? " " : "\n");
            case 4: // Deep nesting in an ignored field.
            {
                var at = text.IndexOf("\"dtype\"", StringComparison.Ordinal);
                if (at < 0) return text;
                var depth = random.Next(120, 130);
                return text.Insert(at, "\"deep\":" + new string('[', depth) + new string(']', depth) + ",");
            }
            case 5: // Wrap a value in an array or an object.
            {
                var spans = Tokens(text, number: false);
                if (spans.Count == 0) return text;
                var (s, e) = spans[random.Next(spans.Count)];
                return random.Next(2) == 0 ? text[..s] + "[" + text[s..e] + "]" + text[e..] : text[..s] + "{" + text[s..e] + ":null}" + text[e..];
            }
            case 6: // Delete a character.
            {
                if (text.Length == 0) return text;
                var at = random.Next(text.Length);
                return text.Remove(at, 1);
            }
            case 7: // Insert a structural character.
                return text.Insert(random.Next(text.Length + 1), "{}[],:\"\\0-".Substring(random.Next(10), 1));
            case 8: // Trailing bytes or a leading byte order mark.
                return random.Next(3) switch { 0 => text + "\0", 1 => "\uFEFF" + text, _ => text + "x" };
            case 9: // A long run of ones as a shape.
            {
                var at = text.IndexOf("\"shape\":[", StringComparison.Ordinal);
                if (at < 0) return text;
                at += "\"shape\":[".Length;
                return text.Insert(at, string.Concat(Enumerable.Repeat("1,", random.Next(30, 40))));
            }
            case 10: // A tensor entry as a sequence.
                return text.Replace("{\"dtype\":", "[", StringComparison.Ordinal).Replace(",\"shape\":", ",", StringComparison.Ordinal);
            default: // A non-ASCII name.
                return text.Replace("\"t0.", "\"\u00e9\u4e2d.", StringComparison.Ordinal);
        }
    }

    /// <summary>The spans of string (or number) tokens, found by a simple scan (good enough to aim mutations).</summary>
    private static List<(int Start, int End)> Tokens(string text, bool number)
    {
        var spans = new List<(int, int)>();
        for (var i = 0; i < text.Length; i++)
        {
            if (text[i] == '"')
            {
                var j = i + 1;
                while (j < text.Length && text[j] != '"') j += text[j] == '\\' ? 2 : 1;
                if (j >= text.Length) break;
                if (!number) spans.Add((i, j + 1));
                i = j;
            }
            else if (number && (char.IsAsciiDigit(text[i]) || text[i] == '-'))
            {
                var j = i;
                while (j < text.Length && (char.IsAsciiDigit(text[j]) || text[j] is '-' or '.' or 'e' or 'E' or '+')) j++;
                spans.Add((i, j));
                i = j - 1;
            }
        }
        return spans;
    }

    /// <summary>The end of the JSON value starting at <paramref name="start"/> (bracket counting outside strings), or -1.</summary>
    private static int ValueEnd(string text, int start)
    {
        var depth = 0;
        for (var i = start; i < text.Length; i++)
        {
            var c = text[i];
            if (c == '"')
            {
                i++;
                while (i < text.Length && text[i] != '"') i += text[i] == '\\' ? 2 : 1;
                if (depth == 0) return i + 1;
            }
            else if (c is '{' or '[') depth++;
            else if (c is '}' or ']')
            {
                if (depth == 0) return i;
                if (--depth == 0) return i + 1;
            }
            else if (c == ',' && depth == 0) return i;
        }
        return -1;
    }

    private static byte[] Assemble(string header, byte[] data, Random random)
    {
        var headerBytes = Encoding.UTF8.GetBytes(header);
        var length = (ulong)headerBytes.Length;
        switch (random.Next(20))
        {
            case 0: length += 1; break;
            case 1: length = length == 0 ? 0 : length - 1; break;
            case 2: length = 100_000_001; break;
        }
        var extra = random.Next(20) switch { 0 => 1, 1 => -1, _ => 0 };
        var dataLength = Math.Max(0, data.Length + extra);
        var file = new byte[8 + headerBytes.Length + dataLength];
        BitConverter.GetBytes(length).CopyTo(file, 0);
        headerBytes.CopyTo(file, 8);
        data.AsSpan(0, Math.Min(data.Length, dataLength)).CopyTo(file.AsSpan(8 + headerBytes.Length));
        if (random.Next(15) == 0 && headerBytes.Length > 0)
        {
            file[8 + random.Next(headerBytes.Length)] ^= (byte)(1 << random.Next(8)); // A bit flip (may break UTF-8).
        }
        return file;
    }

    private sealed class Outcomes
    {
        public readonly SortedDictionary<string, int> Counts = new(StringComparer.Ordinal);
        public readonly List<string> Failures = [];
        public readonly SortedDictionary<string, int> Stricter = new(StringComparer.Ordinal);

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

    [Test]
    public void SafeTensorsReader_MatchesReferenceOracle()
    {
        var random = new Random(Seed);
        var outcomes = new Outcomes();
        var dump = Environment.GetEnvironmentVariable("WEMOE_FUZZ_DUMP");
        using var verdicts = dump is null ? null : new StreamWriter(Path.Combine(Directory.CreateDirectory(dump).FullName, "verdicts.tsv"));
        var path = _folder.File("case.safetensors");
        var clock = Stopwatch.StartNew();
        long mostAllocated = 0;
        for (var i = 0; i < Cases; i++)
        {
            var (header, data) = MakeSeed(random);
            var mutations = random.Next(0, 4);
            for (var m = 0; m < mutations; m++)
            {
                header = Mutate(header, random);
            }
            var file = Assemble(header, data, random);
            var casePath = dump is null ? path : Path.Combine(dump, $"{i:D6}.safetensors");
            File.WriteAllBytes(casePath, file);
            var oracle = ReferenceOracle.Check(file);
            verdicts?.WriteLine($"{casePath}\t{(oracle.Accepted ? "ok" : "err")}\t{oracle.Reason}");

            var describe = $"case {i}: {Truncate(header)} ({file.Length} bytes); reference: {(oracle.Accepted ? "accepts" : oracle.Reason)}";
            var before = GC.GetAllocatedBytesForCurrentThread();
            SafeTensorsFile? ours = null;
            Exception? error = null;
            try
            {
                ours = SafeTensorsFile.Open(casePath);
            }
            catch (Exception ex)
            {
                error = ex;
            }
            var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            mostAllocated = Math.Max(mostAllocated, allocated);
            using (ours)
            {
                if (allocated > 16L * file.Length + (1 << 20))
                {
                    outcomes.Add("memory-beyond-bound", $"{describe}; allocated {allocated}");
                }
                else if (error is not null and not SafeTensorsFormatException)
                {
                    outcomes.Add("foreign-exception", $"{describe}; {error.GetType().Name}: {error.Message}");
                }
                else if (error is SafeTensorsFormatException format)
                {
                    if (format.FilePath != casePath)
                    {
                        outcomes.Add("foreign-exception", $"{describe}; the exception names '{format.FilePath}'");
                    }
                    else if (!oracle.Accepted)
                    {
                        outcomes.Add("clean-rejection");
                    }
                    else if (StricterRules.Keys.FirstOrDefault(k => format.Message.Contains(k, StringComparison.Ordinal)) is { } rule)
                    {
                        outcomes.Add("stricter-on-purpose");
                        outcomes.Stricter[rule] = outcomes.Stricter.GetValueOrDefault(rule) + 1;
                    }
                    else
                    {
                        outcomes.Add("rejected-by-unlisted-rule", $"{describe}; ours: {format.Message}");
                    }
                }
                else if (!oracle.Accepted)
                {
                    outcomes.Add("accepted-but-reference-rejects", describe);
                }
                else if (Difference(ours!, oracle) is { } difference)
                {
                    outcomes.Add("accepted-but-different", $"{describe}; {difference}");
                }
                else if (LoadAll(ours!) is { } loadError)
                {
                    outcomes.Add("foreign-exception", $"{describe}; load: {loadError}");
                }
                else
                {
                    outcomes.Add("accepted-equal");
                }
            }
        }
        TestContext.Out.WriteLine($"safetensors: {Cases} cases, seed {Seed}, {clock.Elapsed.TotalSeconds:F1} s, at most {mostAllocated:N0} bytes allocated by one open: {outcomes}");
        TestContext.Out.WriteLine($"stricter on purpose, by rule: {string.Join(", ", outcomes.Stricter.Select(p => $"'{p.Key}' {p.Value}"))}");
        Assert.That(outcomes.Failures, Is.Empty);
        Assert.That(outcomes.Counts.GetValueOrDefault("accepted-equal"), Is.GreaterThan(Cases / 20), "the mutations must leave enough valid files");
        Assert.That(outcomes.Counts.GetValueOrDefault("clean-rejection"), Is.GreaterThan(Cases / 20));
    }

    private static string Truncate(string text) => text.Length <= 300 ? text : text[..300] + "…";

    private static string? Difference(SafeTensorsFile ours, ReferenceOracle.Verdict oracle)
    {
        var expected = oracle.Tensors!;
        if (!ours.Names.SequenceEqual(expected.Keys.Order(StringComparer.Ordinal)))
        {
            return $"names [{string.Join(", ", ours.Names)}] vs [{string.Join(", ", expected.Keys)}]";
        }
        foreach (var name in ours.Names)
        {
            var info = ours.GetInfo(name);
            var reference = expected[name];
            if (info.DType.ToString() != reference.DType || !info.Shape.Select(d => (ulong)d).SequenceEqual(reference.Shape)
                || (ulong)info.Begin != reference.Begin || (ulong)info.End != reference.End)
            {
                return $"tensor '{name}': {info.DType} [{string.Join(",", info.Shape)}] [{info.Begin},{info.End}) vs {reference}";
            }
        }
        var metadata = oracle.Metadata ?? new Dictionary<string, string>();
        if (ours.Metadata.Count != metadata.Count || metadata.Any(p => !ours.Metadata.TryGetValue(p.Key, out var v) || v != p.Value))
        {
            return "metadata differs";
        }
        return null;
    }

    /// <summary>Loads every tensor; only documented exceptions are allowed (dtypes TorchSharp lacks, BOOL bytes other than 0/1).</summary>
    private static string? LoadAll(SafeTensorsFile file)
    {
        foreach (var name in file.Names)
        {
            try
            {
                using var tensor = file.Load(name);
                if (!tensor.shape.SequenceEqual(file.GetInfo(name).Shape))
                {
                    return $"'{name}' loaded with shape [{string.Join(",", tensor.shape)}]";
                }
            }
            catch (NotSupportedException)
            {
            }
            catch (SafeTensorsFormatException ex) when (ex.Message.Contains("BOOL element", StringComparison.Ordinal))
            {
            }
            catch (Exception ex)
            {
                return $"'{name}': {ex.GetType().Name}: {ex.Message}";
            }
        }
        return null;
    }

    [Test]
    public void ShardedIndex_MutatedIndexes_AcceptOrRejectCleanly()
    {
        var random = new Random(Seed + 1);
        var outcomes = new Outcomes();
        File.WriteAllBytes(_folder.File("s1.safetensors"), SafeTensorsReliabilityTestsFile("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4));
        File.WriteAllBytes(_folder.File("s2.safetensors"), SafeTensorsReliabilityTestsFile("{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2));
        var s1 = new FileInfo(_folder.File("s1.safetensors")).Length;
        var s2 = new FileInfo(_folder.File("s2.safetensors")).Length;
        var seeds = new[]
        {
            "{\"metadata\":{\"total_size\":6},\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}",
            $"{{\"weight_map\":{{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}},\"wemoe_shards\":{{\"s1.safetensors\":{{\"size\":{s1},\"sha256\":\"{new string('0', 64)}\"}},\"s2.safetensors\":{{\"size\":{s2},\"sha256\":\"{new string('1', 64)}\"}}}}}}",
        };
        var index = _folder.File("model.safetensors.index.json");
        for (var i = 0; i < Cases / 3; i++)
        {
            var text = seeds[random.Next(seeds.Length)];
            for (var m = random.Next(0, 4); m > 0; m--)
            {
                text = Mutate(text, random);
            }
            File.WriteAllText(index, text);
            try
            {
                using var checkpoint = SafeTensorsCheckpoint.Open(index);
                foreach (var name in checkpoint.Names)
                {
                    checkpoint.Load(name).Dispose();
                }
                outcomes.Add("accepted");
            }
            catch (Exception ex) when (ex is SafeTensorsFormatException or FileNotFoundException or KeyNotFoundException)
            {
                outcomes.Add("clean-rejection");
            }
            catch (Exception ex)
            {
                outcomes.Add("foreign-exception", $"{Truncate(text)}: {ex.GetType().Name}: {ex.Message}");
            }
        }
        TestContext.Out.WriteLine($"index: {Cases / 3} cases: {outcomes}");
        Assert.That(outcomes.Failures, Is.Empty);
        Assert.That(outcomes.Counts.GetValueOrDefault("accepted"), Is.GreaterThan(0));
    }

    [Test]
    public void ClipConfig_MutatedConfigs_AcceptOrRejectCleanly()
    {
        var random = new Random(Seed + 2);
        var outcomes = new Outcomes();
        var seeds = new[]
        {
            new ClipVisionConfig().ToJson(withProjection: true),
            "{\"model_type\":\"clip\",\"projection_dim\":512,\"vision_config\":{\"hidden_size\":768,\"image_size\":224,\"patch_size\":32,\"model_type\":\"clip_vision_model\"}}",
        };
        var path = _folder.File("config.json");
        for (var i = 0; i < Cases / 3; i++)
        {
            var text = seeds[random.Next(seeds.Length)];
            for (var m = random.Next(0, 4); m > 0; m--)
            {
                text = Mutate(text, random);
            }
            File.WriteAllText(path, text);
            try
            {
                var config = ClipVisionConfig.FromFile(path);
                Assert.That(ClipVisionConfig.FromJson(config.ToJson()), Is.EqualTo(config), text);
                outcomes.Add("accepted");
            }
            catch (Exception ex) when (ex is FormatException or ArgumentException && ex.Message.Contains(path, StringComparison.Ordinal))
            {
                outcomes.Add("clean-rejection");
            }
            catch (Exception ex)
            {
                outcomes.Add("foreign-exception", $"{Truncate(text)}: {ex.GetType().Name}: {ex.Message}");
            }
        }
        TestContext.Out.WriteLine($"config: {Cases / 3} cases: {outcomes}");
        Assert.That(outcomes.Failures, Is.Empty);
        Assert.That(outcomes.Counts.GetValueOrDefault("accepted"), Is.GreaterThan(0));
    }

    private static byte[] SafeTensorsReliabilityTestsFile(string header, int data) =>
        Reliability.SafeTensorsReliabilityTests.FileBytes(header, data);
}
