using System.Text.Json;
using System.Text.Json.Nodes;
using WeightEnsembling.Models;
using WeightEnsembling.Tasks;

namespace WeightEnsembling.Training;

/// <summary>
/// The trainer's part of a checkpoint (<c>trainer_state.json</c>): the step, and what fixes the positions of the data
/// streams and of the objective's random draws (seed, batch size, task order, objective), which a resume replays.
/// </summary>
internal sealed record TrainerState(string Method, string Objective, int Step, int Steps, int Seed, int BatchSize, IReadOnlyList<string> Tasks, double LearningRate)
{
    public const string FileName = "trainer_state.json";

    private const string Format = "weight-ensembling/training-state/1";

    public static TrainerState Of(IAdaptableModel model, AdaptationOptions options, IReadOnlyList<ClassificationTask> tasks, int step) =>
        new(model.Method, options.Objective.Name, step, options.Steps, options.Seed, options.BatchSize, tasks.Select(t => t.Name).ToArray(), options.LearningRate);

    public string ToJson() => new JsonObject
    {
        ["format"] = Format,
        ["method"] = Method,
        ["objective"] = Objective,
        ["step"] = Step,
        ["total_steps"] = Steps,
        ["seed"] = Seed,
        ["batch_size"] = BatchSize,
        ["tasks"] = new JsonArray(Tasks.Select(t => (JsonNode)t).ToArray()),
        ["learning_rate"] = LearningRate,

        // Each task's stream has yielded `step` batches and the objective has made `step` draws: a resume replays them.
        ["batches_drawn_per_task"] = Step,
        ["objective_draws"] = Step,
    }.ToJsonString(new JsonSerializerOptions { WriteIndented = true });

    public static TrainerState Read(string folder)
    {
        string path = Path.Combine(folder, FileName);
        if (!File.Exists(path))
        {
            throw new InvalidDataException($"'{folder}' is not a training checkpoint: it has no {FileName}.");
        }

        try
        {
            // Lone surrogate escapes are refused here (JsonNode would throw InvalidOperationException when a value is read).
            var json = TrainedWeightsFolder.ParseConfig(path) as JsonObject
                ?? throw new InvalidDataException($"'{path}' does not hold a JSON object.");
            string Text(string name) => json[name] is JsonValue value && value.TryGetValue<string>(out var text)
                ? text
                : throw new InvalidDataException($"'{path}' lacks string field '{name}'.");
            int Integer(string name) => json[name] is JsonValue value && value.TryGetValue<int>(out var number) && number >= 0
                ? number
                : throw new InvalidDataException($"'{path}' lacks non-negative integer field '{name}'.");
            if (Text("format") != Format)
            {
                throw new InvalidDataException($"'{path}' has format '{Text("format")}'; this version reads '{Format}'.");
            }

            var tasks = json["tasks"] is JsonArray array && array.All(n => n is JsonValue v && v.TryGetValue<string>(out _))
                ? array.Select(n => n!.GetValue<string>()).ToArray()
                : throw new InvalidDataException($"'{path}' lacks string-array field 'tasks'.");
            double learningRate = json["learning_rate"] is JsonValue lr && lr.TryGetValue<double>(out var rate)
                ? rate
                : throw new InvalidDataException($"'{path}' lacks number field 'learning_rate'.");
            return new TrainerState(Text("method"), Text("objective"), Integer("step"), Integer("total_steps"), Integer("seed"), Integer("batch_size"), tasks, learningRate);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>What makes a saved state unable to resume into a run with state <paramref name="current"/>, one phrase each.</summary>
    public IEnumerable<string> DifferencesFrom(TrainerState current)
    {
        if (Method != current.Method)
        {
            yield return $"method: saved {Method}, this run {current.Method}";
        }

        if (Objective != current.Objective)
        {
            yield return $"objective: saved {Objective}, this run {current.Objective}";
        }

        if (Seed != current.Seed)
        {
            yield return $"{nameof(AdaptationOptions.Seed)}: saved {Seed}, this run {current.Seed}";
        }

        if (BatchSize != current.BatchSize)
        {
            yield return $"{nameof(AdaptationOptions.BatchSize)}: saved {BatchSize}, this run {current.BatchSize}";
        }

        if (!Tasks.SequenceEqual(current.Tasks, StringComparer.Ordinal))
        {
            yield return $"tasks: saved [{string.Join(", ", Tasks)}], this run [{string.Join(", ", current.Tasks)}]";
        }

        if (Step > current.Steps)
        {
            yield return $"the checkpoint is at step {Step}, past this run's {nameof(AdaptationOptions.Steps)} = {current.Steps}";
        }
    }
}
