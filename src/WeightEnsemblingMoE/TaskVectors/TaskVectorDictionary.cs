using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.TaskVectors;

/// <summary>
/// The task vectors of one wrapped module: an ordered map from parameter name (e.g. <c>fc1.weight</c>) to the
/// <see cref="TaskVectorStorage"/> of that parameter. The storages are registered submodules under names with '.'
/// replaced by '_' (TorchSharp module names cannot contain '.'), so state-dict keys read <c>fc1_weight.task_vectors</c>;
/// <see cref="ParameterNames"/> keeps the original names.
/// </summary>
/// <remarks>
/// The storages are registered with <c>register_module</c> rather than held in a <c>ModuleDict</c>: in TorchSharp 0.107
/// <c>to(dtype)</c>/<c>to(device)</c> on a module containing a <c>ModuleDict&lt;T&gt;</c> throws (its two indexers both
/// reflect as "Item").
/// </remarks>
public sealed class TaskVectorDictionary : nn.Module
{
    private readonly Dictionary<string, TaskVectorStorage> storagesByParameter;
    private readonly string[] parameterNames;
    private readonly Dictionary<string, string> moduleNames;

    /// <summary>Creates a dictionary from storages that already exist (it takes ownership of them).</summary>
    /// <param name="storages">The storages by parameter name, in order; all must have the same task count.</param>
    /// <param name="name">The module name. The default value is "task_vectors".</param>
    public TaskVectorDictionary(IEnumerable<KeyValuePair<string, TaskVectorStorage>> storages, string name = "task_vectors")
        : base(name)
    {
        ArgumentNullException.ThrowIfNull(storages);
        var names = new List<string>();
        moduleNames = new Dictionary<string, string>(StringComparer.Ordinal);
        var usedModuleNames = new Dictionary<string, string>(StringComparer.Ordinal);
        storagesByParameter = new Dictionary<string, TaskVectorStorage>(StringComparer.Ordinal);
        int taskCount = -1;
        foreach (var (parameterName, storage) in storages)
        {
            ArgumentException.ThrowIfNullOrEmpty(parameterName, nameof(storages));
            if (storage is null)
            {
                throw new ArgumentException($"The storage of parameter '{parameterName}' is null.", nameof(storages));
            }

            if (moduleNames.ContainsKey(parameterName))
            {
                throw new ArgumentException($"Parameter '{parameterName}' appears twice.", nameof(storages));
            }

            if (taskCount >= 0 && storage.TaskCount != taskCount)
            {
                throw new ArgumentException(
                    $"The storage of parameter '{parameterName}' holds {storage.TaskCount} tasks; the others hold {taskCount}.", nameof(storages));
            }

            taskCount = storage.TaskCount;
            string moduleName = ToModuleName(parameterName);
            if (usedModuleNames.TryGetValue(moduleName, out var clash))
            {
                throw new ArgumentException(
                    $"Parameters '{clash}' and '{parameterName}' both map to module name '{moduleName}'.", nameof(storages));
            }

            usedModuleNames.Add(moduleName, parameterName);
            moduleNames.Add(parameterName, moduleName);
            names.Add(parameterName);
            storagesByParameter.Add(parameterName, storage);
            register_module(moduleName, storage);
        }

        if (names.Count == 0)
        {
            throw new ArgumentException("A task-vector dictionary needs at least one parameter.", nameof(storages));
        }

        parameterNames = [.. names];
        TaskCount = taskCount;
    }

    /// <summary>The original parameter names (e.g. <c>fc1.weight</c>), in order.</summary>
    public IReadOnlyList<string> ParameterNames => parameterNames;

    /// <summary>The number of tasks T.</summary>
    public int TaskCount { get; }

    /// <summary>The number of stored elements over all storages.</summary>
    public long ElementCount => parameterNames.Sum(n => this[n].ElementCount);

    /// <summary>The number of stored bytes over all storages.</summary>
    public long Bytes => parameterNames.Sum(n => this[n].Bytes);

    /// <summary>The storage of parameter <paramref name="parameterName"/> (e.g. <c>fc1.weight</c>).</summary>
    /// <exception cref="KeyNotFoundException">The dictionary holds no such parameter.</exception>
    public TaskVectorStorage this[string parameterName]
    {
        get
        {
            ArgumentNullException.ThrowIfNull(parameterName);
            if (!storagesByParameter.TryGetValue(parameterName, out var storage))
            {
                throw new KeyNotFoundException(
                    $"No task vectors for parameter '{parameterName}'; known parameters: {string.Join(", ", parameterNames)}.");
            }

            return storage;
        }
    }

    /// <summary>Whether the dictionary holds task vectors for <paramref name="parameterName"/>.</summary>
    /// <param name="parameterName">The parameter name, e.g. <c>fc1.weight</c>.</param>
    public bool Contains(string parameterName) => moduleNames.ContainsKey(parameterName);

    /// <summary>The module name a parameter name maps to ('.' → '_').</summary>
    /// <param name="parameterName">The parameter name, e.g. <c>fc1.weight</c>.</param>
    public static string ToModuleName(string parameterName)
    {
        ArgumentNullException.ThrowIfNull(parameterName);
        return parameterName.Replace('.', '_');
    }

    /// <summary>
    /// Computes τ_t = θ_t − θ_0 for every parameter of <paramref name="pretrained"/> and stores them as
    /// <paramref name="options"/> asks. The experts are enumerated once, one at a time: a caller may load each lazily and
    /// dispose it once the next is requested. Sparse and low-rank storages compress each task vector as it arrives, so
    /// only one expert's dense task vectors are alive at a time (dense storage keeps the stack anyway).
    /// </summary>
    /// <param name="pretrained">The pretrained parameters θ_0 by name; not modified.</param>
    /// <param name="finetuned">The fine-tuned experts θ_t, each with exactly the keys and shapes of <paramref name="pretrained"/>; not modified.</param>
    /// <param name="options">How to store the task vectors; validated.</param>
    /// <exception cref="ArgumentException">No experts, a missing or extra key, a shape mismatch or a NaN/Inf value (the message names the expert and the tensor), or a bad option.</exception>
    public static TaskVectorDictionary Create(
        IReadOnlyDictionary<string, Tensor> pretrained,
        IEnumerable<IReadOnlyDictionary<string, Tensor>> finetuned,
        TaskVectorStorageOptions options)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        ArgumentNullException.ThrowIfNull(finetuned);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (pretrained.Count == 0)
        {
            throw new ArgumentException("The pretrained state dict is empty.", nameof(pretrained));
        }

        string[] names = [.. pretrained.Keys];
        foreach (var name in names)
        {
            var tensor = pretrained[name] ?? throw new ArgumentException($"Pretrained tensor '{name}' is null.", nameof(pretrained));
            if (!tensor.is_floating_point())
            {
                throw new ArgumentException($"Pretrained tensor '{name}' has dtype {tensor.dtype}; task vectors need floating-point tensors.", nameof(pretrained));
            }

            if (!tensor.isfinite().all().item<bool>())
            {
                throw new ArgumentException($"Pretrained tensor '{name}' contains NaN or Inf.", nameof(pretrained));
            }
        }

        var builders = names.Select(n => StorageBuilder.For(options, n, pretrained[n])).ToArray();
        try
        {
            int expertIndex = 0;
            foreach (var expert in finetuned)
            {
                CheckKeys(expert, pretrained, names, expertIndex);
                for (int i = 0; i < names.Length; i++)
                {
                    using var scope = NewDisposeScope();
                    var theta0 = pretrained[names[i]];
                    var theta = expert[names[i]] ?? throw new ArgumentException($"Expert {expertIndex}: tensor '{names[i]}' is null.", nameof(finetuned));
                    if (!theta.shape.SequenceEqual(theta0.shape))
                    {
                        throw new ArgumentException(
                            $"Expert {expertIndex}: tensor '{names[i]}' has shape [{string.Join(", ", theta.shape)}]; the pretrained tensor has [{string.Join(", ", theta0.shape)}].",
                            nameof(finetuned));
                    }

                    var taskVector = theta.detach().to(theta0.dtype, theta0.device) - theta0.detach();
                    if (!taskVector.isfinite().all().item<bool>())
                    {
                        throw new ArgumentException($"Expert {expertIndex}: tensor '{names[i]}' contains NaN or Inf.", nameof(finetuned));
                    }

                    builders[i].Add(taskVector);
                }

                expertIndex++;
            }

            if (expertIndex == 0)
            {
                throw new ArgumentException("At least one fine-tuned expert is needed; the sequence was empty.", nameof(finetuned));
            }

            var storages = new List<KeyValuePair<string, TaskVectorStorage>>(names.Length);
            for (int i = 0; i < names.Length; i++)
            {
                storages.Add(new(names[i], builders[i].Build()));
            }

            return new TaskVectorDictionary(storages);
        }
        finally
        {
            foreach (var builder in builders)
            {
                builder.Dispose();
            }
        }
    }

    private static void CheckKeys(
        IReadOnlyDictionary<string, Tensor> expert, IReadOnlyDictionary<string, Tensor> pretrained, string[] names, int expertIndex)
    {
        if (expert is null)
        {
            throw new ArgumentException($"Expert {expertIndex} is null.", "finetuned");
        }

        var missing = names.Where(n => !expert.ContainsKey(n)).ToArray();
        if (missing.Length > 0)
        {
            throw new ArgumentException($"Expert {expertIndex} lacks tensor(s) {string.Join(", ", missing.Select(m => $"'{m}'"))}.", "finetuned");
        }

        var extra = expert.Keys.Where(k => !pretrained.ContainsKey(k)).ToArray();
        if (extra.Length > 0)
        {
            throw new ArgumentException(
                $"Expert {expertIndex} has tensor(s) {string.Join(", ", extra.Select(m => $"'{m}'"))} that the pretrained state dict lacks.", "finetuned");
        }
    }

    /// <summary>
    /// θ_0 + Σ_t r_t τ_t for every parameter of <paramref name="baseModule"/> (parameters without task vectors are copied),
    /// checked to be finite. Call under <c>no_grad()</c> inside a dispose scope; the caller moves the results out.
    /// </summary>
    internal Dictionary<string, Tensor> Merge(nn.Module baseModule, Tensor routing)
    {
        var merged = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, parameter) in baseModule.named_parameters())
        {
            var value = Contains(name)
                ? parameter + this[name].WeightedSum(routing.to(parameter.dtype, parameter.device))
                : parameter.detach().clone();
            if (!value.isfinite().all().item<bool>())
            {
                throw new InvalidOperationException($"The merged tensor '{name}' contains NaN or Inf.");
            }

            merged[name] = value;
        }

        return merged;
    }
}
