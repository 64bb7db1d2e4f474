using System.Text;
using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Models;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>
/// The training checkpoint folder: the model's <see cref="IAdaptableModel.SavePretrained"/> files, the Adam state in
/// <c>optimizer.safetensors</c> (<c>exp_avg.{name}</c>, <c>exp_avg_sq.{name}</c>, float, shaped as the parameter, and
/// <c>step.{name}</c>, an int64 scalar, for each trainable parameter name; with <see cref="AdaptationOptions.AnchorStrength"/>,
/// also <c>anchor.{name}</c>, the parameter's value when the run started) and <see cref="TrainerState"/>. The whole folder is
/// replaced atomically (<see cref="AtomicFolderWriter"/>): a reader or a crash sees the previous checkpoint or the new one.
/// </summary>
internal static class TrainingCheckpoint
{
    public const string OptimizerFileName = "optimizer.safetensors";

    private const string Format = "weight-ensembling/adam-state/1";
    private const string ExpAvg = "exp_avg.";
    private const string ExpAvgSq = "exp_avg_sq.";
    private const string StepCount = "step.";
    private const string Anchor = "anchor.";

    public static void Save(
        string folder, IAdaptableModel model, Adam optimizer, IReadOnlyList<KeyValuePair<string, Parameter>> parameters, TrainerState state, IReadOnlyList<Tensor>? anchors)
    {
        using var writer = AtomicFolderWriter.Begin(folder, _ => true);
        model.SavePretrained(writer.StagingFolder);
        using (var scope = NewDisposeScope())
        {
            var states = AdamStates(optimizer, parameters);
            var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            for (int i = 0; i < parameters.Count; i++)
            {
                string name = parameters[i].Key;
                tensors[ExpAvg + name] = states[i].exp_avg.detach().cpu().contiguous();
                tensors[ExpAvgSq + name] = states[i].exp_avg_sq.detach().cpu().contiguous();
                tensors[StepCount + name] = tensor(states[i].step, ScalarType.Int64, device: CPU);
                if (anchors is not null)
                {
                    tensors[Anchor + name] = anchors[i].detach().cpu().contiguous();
                }
            }

            SafeTensorsWriter.Save(writer.PathFor(OptimizerFileName), tensors, new Dictionary<string, string>(StringComparer.Ordinal) { ["format"] = Format });
        }

        writer.WriteFile(TrainerState.FileName, stream => stream.Write(Encoding.UTF8.GetBytes(state.ToJson())));
        writer.Commit();
    }

    /// <summary>
    /// Restores a checkpoint into <paramref name="model"/> and <paramref name="optimizer"/> after checking that it fits the
    /// run <paramref name="current"/> describes; returns the checkpoint's step. With <paramref name="anchors"/>, the saved
    /// θ₀ of <see cref="AdaptationOptions.AnchorStrength"/> is copied into them. Nothing changes when a check fails.
    /// </summary>
    public static int Load(
        string folder, IAdaptableModel model, Adam optimizer, IReadOnlyList<KeyValuePair<string, Parameter>> parameters, TrainerState current, IReadOnlyList<Tensor>? anchors)
    {
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"The checkpoint folder '{folder}' to resume from does not exist.");
        }

        var saved = TrainerState.Read(folder);
        var differences = saved.DifferencesFrom(current).ToList();
        if (differences.Count > 0)
        {
            throw new InvalidDataException($"The checkpoint '{folder}' cannot resume this run: {string.Join("; ", differences)}.");
        }

        string path = Path.Combine(folder, OptimizerFileName);
        if (!File.Exists(path))
        {
            throw new InvalidDataException($"The checkpoint '{folder}' holds no optimizer state ({OptimizerFileName}): its weights load with LoadPretrained, but it cannot resume training.");
        }

        using var scope = NewDisposeScope();
        using var file = SafeTensorsFile.Open(path);
        var expected = new HashSet<string>(StringComparer.Ordinal);
        var moments = new List<(Tensor ExpAvg, Tensor ExpAvgSq, long Step)>(parameters.Count);
        var savedAnchors = new List<Tensor>(parameters.Count);
        foreach (var (name, parameter) in parameters)
        {
            Tensor Moment(string key)
            {
                expected.Add(key);
                if (!file.Contains(key))
                {
                    throw new InvalidDataException($"'{path}' lacks optimizer tensor '{key}': it was saved from another model.");
                }

                var loaded = TrainedWeightsFolder.LoadTensor(file, key, path);
                if (!loaded.shape.SequenceEqual(parameter.shape))
                {
                    throw new InvalidDataException(
                        $"'{path}': optimizer tensor '{key}' has shape [{string.Join(", ", loaded.shape)}], expected [{string.Join(", ", parameter.shape)}].");
                }

                // A NaN or Inf moment would turn every parameter it updates into NaN at the next step.
                if (loaded.is_floating_point() && !loaded.isfinite().all().item<bool>())
                {
                    throw new InvalidDataException($"'{path}': optimizer tensor '{key}' contains NaN or Inf.");
                }

                return loaded;
            }

            var expAvg = Moment(ExpAvg + name);
            var expAvgSq = Moment(ExpAvgSq + name);
            string stepKey = StepCount + name;
            expected.Add(stepKey);
            if (!file.Contains(stepKey))
            {
                throw new InvalidDataException($"'{path}' lacks optimizer tensor '{stepKey}'.");
            }

            var stepTensor = TrainedWeightsFolder.LoadTensor(file, stepKey, path);
            if (stepTensor.dtype != ScalarType.Int64 || stepTensor.numel() != 1 || stepTensor.item<long>() < 0)
            {
                throw new InvalidDataException($"'{path}': optimizer tensor '{stepKey}' must be one non-negative int64.");
            }

            moments.Add((expAvg, expAvgSq, stepTensor.item<long>()));
            if (anchors is not null)
            {
                if (!file.Contains(Anchor + name))
                {
                    throw new InvalidDataException(
                        $"'{path}' lacks '{Anchor + name}': the checkpoint was saved without {nameof(AdaptationOptions.AnchorStrength)}, so it cannot resume a run that anchors.");
                }

                savedAnchors.Add(Moment(Anchor + name));
            }
        }

        var extra = file.Names.Where(n => !expected.Contains(n)).ToList();
        if (anchors is null && extra.Any(n => n.StartsWith(Anchor, StringComparison.Ordinal)))
        {
            throw new InvalidDataException(
                $"'{path}' was saved by a run with {nameof(AdaptationOptions.AnchorStrength)} > 0; resume it with the same setting.");
        }

        if (extra.Count > 0)
        {
            throw new InvalidDataException($"'{path}' holds optimizer tensors of parameters this model does not train: {string.Join(", ", extra.Take(5))}.");
        }

        try
        {
            model.LoadPretrained(folder);
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or DirectoryNotFoundException)
        {
            throw new InvalidDataException($"The checkpoint '{folder}' does not fit this model: {e.Message}", e);
        }

        var states = AdamStates(optimizer, parameters);
        using var noGrad = no_grad();
        for (int i = 0; i < parameters.Count; i++)
        {
            states[i].exp_avg.copy_(moments[i].ExpAvg);
            states[i].exp_avg_sq.copy_(moments[i].ExpAvgSq);
            states[i].step = moments[i].Step;
            if (anchors is not null)
            {
                anchors[i].copy_(savedAnchors[i]);
            }
        }

        return saved.Step;
    }

    // TorchSharp's Adam keeps one Adam.State per parameter, in the order the parameters were given; its fields are public.
    private static Adam.State[] AdamStates(Adam optimizer, IReadOnlyList<KeyValuePair<string, Parameter>> parameters)
    {
        var states = optimizer.state_dict().State;
        if (states.Count != parameters.Count)
        {
            throw new InvalidOperationException($"The optimizer holds {states.Count} parameter states for {parameters.Count} parameters.");
        }

        return states.Select((s, i) => s as Adam.State
            ?? throw new InvalidOperationException($"The optimizer state of '{parameters[i].Key}' is not Adam's.")).ToArray();
    }
}
