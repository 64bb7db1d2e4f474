using System.Security.Cryptography;
using System.Text;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Models;

/// <summary>
/// The inputs of every merging method: one pre-trained CLIP vision model θ_0 and named fine-tuned experts θ_t, held in
/// memory or read lazily from Hugging Face folders, one tensor at a time (as FusionBench's <c>BaseModelPool</c>). The pool
/// checks the experts once, when it is made (configuration, key set, shapes, floating-point dtypes; values are checked
/// finite as they are read), and yields θ_0, the experts' weights and the task vectors τ_t = θ_t − θ_0 by key, so that
/// methods see tensors by name and never open files.
/// </summary>
/// <remarks>
/// A pool never modifies nor disposes the models it wraps; every tensor it returns belongs to the caller. Reads stream
/// expert by expert: an expert's files are mapped only while it is being read, so eight ViT-B/32 experts can be merged
/// in the memory of a few models.
/// </remarks>
/// <example>
/// <code>
/// using WeightEnsembling.Models;
/// using WeightEnsembling.Upscaling;
///
/// var pool = ModelPool.FromFolders("clip-vit-base-patch32", ["svhn", "mnist", "gtsrb"]);
/// using var upscaled = ModelUpscaler.For(pool).WithRouterDepth(2).Build();
/// </code>
/// </example>
public sealed class ModelPool
{
    private readonly ModelSource pretrained;
    private readonly IReadOnlyList<ModelSource> experts;
    private readonly string[] keys;
    private ModelPoolFingerprint? fingerprint;

    private ModelPool(ModelSource pretrained, IReadOnlyList<ModelSource> experts, IReadOnlyList<string> names)
    {
        if (experts.Count == 0)
        {
            throw new ArgumentException("A model pool needs at least one fine-tuned expert.", nameof(experts));
        }

        var duplicate = names.GroupBy(n => n, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Expert name '{duplicate.Key}' is used more than once; every expert needs its own name.", nameof(names));
        }

        this.pretrained = pretrained;
        this.experts = experts;
        ExpertNames = names.ToArray();
        using (var template = new ClipVisionModel(pretrained.Config, pretrained.HasProjection))
        {
            keys = template.state_dict().Keys.ToArray();
        }

        Check();
    }

    /// <summary>The architecture shared by θ_0 and every expert.</summary>
    public ClipVisionConfig Config => pretrained.Config;

    /// <summary>Whether the models have a visual projection (<c>visual_projection.weight</c>).</summary>
    public bool HasProjection => pretrained.HasProjection;

    /// <summary>The experts' names, in task order (the order of routing weights and task vectors).</summary>
    public IReadOnlyList<string> ExpertNames { get; }

    /// <summary>The number of experts T.</summary>
    public int ExpertCount => experts.Count;

    /// <summary>Every state-dict key of the architecture, in module order.</summary>
    public IReadOnlyList<string> Keys => keys;

    /// <summary>Makes a pool over models held in memory (not modified, not disposed by the pool).</summary>
    /// <param name="pretrained">The pre-trained model θ_0.</param>
    /// <param name="finetuned">The fine-tuned experts, in task order.</param>
    /// <param name="names">The experts' names, or <see langword="null"/> for <c>expert_0</c>, <c>expert_1</c>, ….</param>
    /// <returns>The pool.</returns>
    /// <exception cref="ArgumentException">
    /// No experts, a null expert, a name count that differs from the expert count, a repeated name, or an expert that
    /// differs from θ_0 in architecture, key set, shape or dtype (the message names the expert and the tensor).
    /// </exception>
    public static ModelPool FromModels(ClipVisionModel pretrained, IEnumerable<ClipVisionModel> finetuned, IEnumerable<string>? names = null)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(finetuned);
        var models = finetuned.ToList();
        var expertNames = Names(names, models.Count, t => $"expert_{t}");
        var sources = models
            .Select((m, t) => ModelSource.FromModel(m ?? throw new ArgumentException($"Expert {t} is null.", nameof(finetuned)), $"expert '{expertNames[t]}'"))
            .ToList();
        try
        {
            return new ModelPool(ModelSource.FromModel(pretrained, "the pre-trained model"), sources, expertNames);
        }
        catch (InvalidDataException e)
        {
            // The models are the caller's arguments: a mismatch is a bad argument, not bad file data.
            throw new ArgumentException(e.Message, nameof(finetuned), e);
        }
    }

    /// <summary>
    /// Makes a pool over Hugging Face folders (config.json plus model.safetensors or a sharded index); only the configs and
    /// the tensor headers are read now, the weights when a method asks for them.
    /// </summary>
    /// <param name="pretrainedFolder">The pre-trained model's folder.</param>
    /// <param name="expertFolders">The experts' folders, in task order.</param>
    /// <param name="names">The experts' names, or <see langword="null"/> for each folder's name.</param>
    /// <returns>The pool.</returns>
    /// <exception cref="DirectoryNotFoundException">A folder does not exist.</exception>
    /// <exception cref="ArgumentException">No experts, a name count that differs from the expert count, or a repeated name.</exception>
    /// <exception cref="InvalidDataException">An expert differs from θ_0 in architecture, key set, shape or dtype; the message names the folder and the tensor.</exception>
    public static ModelPool FromFolders(string pretrainedFolder, IEnumerable<string> expertFolders, IEnumerable<string>? names = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(pretrainedFolder);
        ArgumentNullException.ThrowIfNull(expertFolders);
        var folders = expertFolders.ToList();
        foreach (var folder in folders)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(folder, nameof(expertFolders));
        }

        var expertNames = Names(names, folders.Count, t => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(folders[t]))));
        var sources = folders.Select((f, t) => ModelSource.FromFolder(f, $"expert '{expertNames[t]}'")).ToList();
        return new ModelPool(ModelSource.FromFolder(pretrainedFolder, "the pre-trained model"), sources, expertNames);
    }

    /// <summary>A pool over sources made elsewhere (the upscaler's older entry points mix models and folders).</summary>
    internal static ModelPool FromSources(ModelSource pretrained, IReadOnlyList<ModelSource> experts, IReadOnlyList<string> names) =>
        new(pretrained, experts, names);

    /// <summary>θ_0's tensors as float32, checked finite; the caller owns (and disposes) them.</summary>
    /// <param name="names">State-dict keys, or <see langword="null"/> for every key.</param>
    /// <returns>The tensors by key.</returns>
    /// <exception cref="InvalidDataException">A tensor contains NaN or Inf; the message names the model and the tensor.</exception>
    public Dictionary<string, Tensor> LoadPretrained(IEnumerable<string>? names = null) => Load(pretrained, CheckKeys(names));

    /// <summary>
    /// The experts' tensors, one expert at a time in task order; each dictionary (float32, checked finite) is disposed when
    /// the next expert is requested or the enumeration ends, so copy what must outlive it.
    /// </summary>
    /// <param name="names">State-dict keys, or <see langword="null"/> for every key.</param>
    /// <returns>θ_t by key, per expert.</returns>
    public IEnumerable<IReadOnlyDictionary<string, Tensor>> ExpertWeights(IEnumerable<string>? names = null)
    {
        var wanted = CheckKeys(names);
        foreach (var expert in experts)
        {
            var tensors = Load(expert, wanted);
            try
            {
                yield return tensors;
            }
            finally
            {
                DisposeAll(tensors);
            }
        }
    }

    /// <summary>
    /// The task vectors τ_t = θ_t − θ_0, one expert at a time in task order; each dictionary is disposed when the next
    /// expert is requested or the enumeration ends.
    /// </summary>
    /// <param name="theta0">θ_0 for the wanted keys (from <see cref="LoadPretrained"/>); not modified.</param>
    /// <returns>τ_t by key, per expert.</returns>
    public IEnumerable<IReadOnlyDictionary<string, Tensor>> TaskVectors(IReadOnlyDictionary<string, Tensor> theta0)
    {
        ArgumentNullException.ThrowIfNull(theta0);
        return TaskVectorsCore(theta0);
    }

    /// <summary>
    /// Task arithmetic over the pool, θ_0 + λ Σ_t τ_t, accumulated in float64 expert by expert and returned as float32;
    /// the caller owns the result.
    /// </summary>
    /// <param name="scalingFactor">λ, finite.</param>
    /// <param name="names">State-dict keys, or <see langword="null"/> for every key.</param>
    /// <returns>The merged tensors by key.</returns>
    public Dictionary<string, Tensor> TaskArithmetic(double scalingFactor, IEnumerable<string>? names = null)
    {
        if (!double.IsFinite(scalingFactor))
        {
            throw new ArgumentOutOfRangeException(nameof(scalingFactor), scalingFactor, "The scaling factor λ must be finite.");
        }

        return TaskArithmetic(Enumerable.Repeat(scalingFactor, ExpertCount).ToArray(), names);
    }

    /// <summary>
    /// Task arithmetic with one factor per expert, θ_0 + Σ_t λ_t τ_t (accumulated in float64, returned as float32); the
    /// caller owns the result.
    /// </summary>
    /// <param name="scalingFactors">λ_t for each expert in task order, finite.</param>
    /// <param name="names">State-dict keys, or <see langword="null"/> for every key.</param>
    /// <returns>The merged tensors by key.</returns>
    public Dictionary<string, Tensor> TaskArithmetic(IReadOnlyList<double> scalingFactors, IEnumerable<string>? names = null)
    {
        ArgumentNullException.ThrowIfNull(scalingFactors);
        if (scalingFactors.Count != ExpertCount || scalingFactors.Any(f => !double.IsFinite(f)))
        {
            throw new ArgumentException($"Task arithmetic needs {ExpertCount} finite factors, one per expert; got [{string.Join(", ", scalingFactors)}].", nameof(scalingFactors));
        }

        var wanted = CheckKeys(names);
        using var noGrad = no_grad();
        var theta0 = LoadPretrained(wanted);
        var sums = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var key in wanted)
            {
                sums[key] = zeros_like(theta0[key], dtype: ScalarType.Float64);
            }

            int t = 0;
            foreach (var expert in ExpertWeights(wanted))
            {
                foreach (var key in wanted)
                {
                    using var scope = NewDisposeScope();
                    sums[key].add_(expert[key].to(ScalarType.Float64) - theta0[key].to(ScalarType.Float64), alpha: scalingFactors[t]);
                }

                t++;
            }

            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var key in wanted)
            {
                using var scope = NewDisposeScope();
                var merged = (theta0[key].to(ScalarType.Float64) + sums[key]).to(ScalarType.Float32);
                result[key] = merged.MoveToOuterDisposeScope();
            }

            return result;
        }
        finally
        {
            DisposeAll(theta0);
            DisposeAll(sums);
        }
    }

    /// <summary>A new plain model of the pool's architecture holding <paramref name="weights"/> (checked strictly); the caller owns it.</summary>
    /// <param name="weights">Every state-dict tensor of the architecture.</param>
    /// <returns>The model, in evaluation mode.</returns>
    /// <exception cref="StateDictLoadException">A key is missing, unexpected or of the wrong shape.</exception>
    public ClipVisionModel BuildModel(IReadOnlyDictionary<string, Tensor> weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        return ClipVisionModel.FromStateDict(Config, HasProjection, weights);
    }

    /// <summary>The pre-trained model θ_0 as a new plain model (float32, checked finite); the caller owns it.</summary>
    /// <returns>The model, in evaluation mode.</returns>
    public ClipVisionModel LoadPretrainedModel() => LoadModel(pretrained);

    /// <summary>Expert <paramref name="index"/> as a new plain model (float32, checked finite); the caller owns it.</summary>
    /// <param name="index">The expert's position in task order.</param>
    /// <returns>The model, in evaluation mode.</returns>
    public ClipVisionModel LoadExpertModel(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, experts.Count);
        return LoadModel(experts[index]);
    }

    /// <summary>
    /// SHA-256 fingerprints of θ_0 and of every τ_t (over each float32 tensor's key, shape and bytes), computed on first
    /// use by one streaming pass and cached: what a saved upscaled model records so that it loads only onto the same pool.
    /// </summary>
    /// <returns>The fingerprints.</returns>
    public ModelPoolFingerprint Fingerprint()
    {
        if (fingerprint is not null)
        {
            return fingerprint;
        }

        using var noGrad = no_grad();
        var theta0 = LoadPretrained(keys);
        try
        {
            string pretrainedHash = Hash(theta0);
            var taskVectorHashes = TaskVectorsCore(theta0).Select(Hash).ToArray();
            fingerprint = new ModelPoolFingerprint(pretrainedHash, taskVectorHashes);
            return fingerprint;
        }
        finally
        {
            DisposeAll(theta0);
        }
    }

    private ClipVisionModel LoadModel(ModelSource source)
    {
        var weights = Load(source, keys);
        try
        {
            return BuildModel(weights);
        }
        finally
        {
            DisposeAll(weights);
        }
    }

    private IEnumerable<IReadOnlyDictionary<string, Tensor>> TaskVectorsCore(IReadOnlyDictionary<string, Tensor> theta0)
    {
        var wanted = theta0.Keys.ToArray();
        foreach (var expert in ExpertWeights(wanted))
        {
            var taskVectors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            try
            {
                using (no_grad())
                {
                    foreach (var key in wanted)
                    {
                        taskVectors[key] = expert[key] - theta0[key];
                    }
                }

                yield return taskVectors;
            }
            finally
            {
                DisposeAll(taskVectors);
            }
        }
    }

    private string[] CheckKeys(IEnumerable<string>? names)
    {
        if (names is null)
        {
            return keys;
        }

        var wanted = names.ToArray();
        var known = new HashSet<string>(keys, StringComparer.Ordinal);
        var unknown = wanted.FirstOrDefault(n => !known.Contains(n));
        if (unknown is not null)
        {
            throw new ArgumentException($"'{unknown}' is not a tensor of the pool's architecture.", nameof(names));
        }

        return wanted;
    }

    private void Check()
    {
        foreach (var key in keys)
        {
            if (!pretrained.Contains(key))
            {
                throw new InvalidDataException($"{pretrained.Description} lacks tensor '{key}'.");
            }

            if (!pretrained.IsFloatingPoint(key))
            {
                throw new InvalidDataException($"{pretrained.Description}: tensor '{key}' is not floating-point.");
            }
        }

        foreach (var expert in experts)
        {
            if (expert.HasProjection != pretrained.HasProjection)
            {
                throw new InvalidDataException(
                    $"{expert.Description} {(expert.HasProjection ? "has" : "lacks")} a visual projection; {pretrained.Description} {(pretrained.HasProjection ? "has" : "lacks")} one.");
            }

            foreach (var key in keys)
            {
                if (!expert.Contains(key))
                {
                    throw new InvalidDataException($"{expert.Description} lacks tensor '{key}', which {pretrained.Description} has.");
                }

                var expected = pretrained.ShapeOf(key);
                var actual = expert.ShapeOf(key);
                if (!expected.SequenceEqual(actual))
                {
                    throw new InvalidDataException(
                        $"{expert.Description}: tensor '{key}' has shape [{string.Join(", ", actual)}]; {pretrained.Description} has [{string.Join(", ", expected)}].");
                }

                if (!expert.IsFloatingPoint(key))
                {
                    throw new InvalidDataException($"{expert.Description}: tensor '{key}' is not floating-point.");
                }
            }

            if (expert.Config != pretrained.Config)
            {
                throw new InvalidDataException($"{expert.Description} has another architecture than {pretrained.Description}: {expert.Config} vs {pretrained.Config}.");
            }
        }
    }

    private static Dictionary<string, Tensor> Load(ModelSource source, IReadOnlyList<string> names)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var session = source.Open();
            foreach (var name in names)
            {
                tensors[name] = session.Load(name);
            }

            return tensors;
        }
        catch
        {
            DisposeAll(tensors);
            throw;
        }
    }

    private static string Hash(IReadOnlyDictionary<string, Tensor> tensors)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, tensor) in tensors.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            hash.AppendData(Encoding.UTF8.GetBytes($"{name}|{string.Join(",", tensor.shape)}\n"));
            using var scope = NewDisposeScope();
            var contiguous = tensor.detach().to(ScalarType.Float32).cpu().contiguous();
            TensorBytes.Visit(contiguous, (span, _) => hash.AppendData(span));
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    private static string[] Names(IEnumerable<string>? names, int count, Func<int, string> defaultName)
    {
        if (names is null)
        {
            return Enumerable.Range(0, count).Select(defaultName).ToArray();
        }

        var given = names.ToArray();
        if (given.Length != count)
        {
            throw new ArgumentException($"{given.Length} expert names were given for {count} experts.", nameof(names));
        }

        foreach (var name in given)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(name, nameof(names));
        }

        return given;
    }

    private static void DisposeAll(Dictionary<string, Tensor> tensors)
    {
        foreach (var tensor in tensors.Values)
        {
            tensor.Dispose();
        }
    }
}
