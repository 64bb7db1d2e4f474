using System.Globalization;
using System.Text;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.Tasks;
using WeightEnsembling.Upscaling;
using static TorchSharp.torch;

namespace WeightEnsembling.Zoo;

/// <summary>
/// Whether entropy can guide routing on a zoo: for each task, accuracy and mean prediction entropy of the merged model
/// when every MLP is routed to one expert (θ_0 + τ_j in the MLPs, task arithmetic at λ elsewhere), for every expert j.
/// Entropy minimisation can only find the right expert if the task's own expert (j = i) gives the lowest entropy.
/// </summary>
public static class Diagnosis
{
    public static string Run(string dataFolder, string zooFolder, int examples, double lambda)
    {
        using var pretrained = ClipVisionModel.FromPretrained(Path.Combine(zooFolder, "pretrained"));
        var experts = SuiteTask.All.Select(t => ClipVisionModel.FromPretrained(Path.Combine(zooFolder, t.Name))).ToList();
        var heads = SuiteTask.All.Select(t => TaskHead.Load(Path.Combine(zooFolder, "heads", $"{t.Name}.safetensors"))).ToList();
        var data = SuiteTask.All.Select(t => t.Load(dataFolder, "test", examples)).ToList();
        using var upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).WithInitLambda(lambda).WithRouterDepth(0).Build();
        int t = experts.Count;
        var rows = new List<(string Model, (double Acc, double Ent)[] PerTask)>
        {
            ("pre-trained", data.Select((d, i) => Score(pretrained, heads[i], d)).ToArray()),
            ("own expert", data.Select((d, i) => Score(experts[i], heads[i], d)).ToArray()),
        };
        using (var uniform = upscaled.MergeAndUnload(full(t, (float)lambda)))
        {
            rows.Add(($"task arithmetic λ={lambda}", data.Select((d, i) => Score(uniform, heads[i], d)).ToArray()));
        }

        for (int j = 0; j < t; j++)
        {
            using var routing = zeros(t);
            routing[j] = 1f;
            using var routed = upscaled.MergeAndUnload(routing);
            rows.Add(($"MLPs → expert {SuiteTask.All[j].Name}", data.Select((d, i) => Score(routed, heads[i], d)).ToArray()));
        }

        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"accuracy % / mean entropy (nats) on {examples} test images per task; non-MLP weights: task arithmetic λ = {lambda}");
        text.AppendLine("| model | " + string.Join(" | ", SuiteTask.All.Select(s => s.Name)) + " |");
        text.AppendLine("| --- |" + string.Concat(Enumerable.Repeat(" ---: |", t)));
        foreach (var (model, perTask) in rows)
        {
            text.AppendLine($"| {model} | " + string.Join(" | ", perTask.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Acc * 100:F1} / {p.Ent:F2}"))) + " |");
        }

        experts.ForEach(e => e.Dispose());
        heads.ForEach(h => h.Dispose());
        data.ForEach(d => d.Dispose());
        return text.ToString();
    }

    /// <summary>Adapts WEMoE and prints per-task accuracy, entropy and each task's routing averaged over the modules.</summary>
    public static string Adapt(string dataFolder, string zooFolder, int examples, double learningRate, int steps, int depth)
    {
        using var pretrained = ClipVisionModel.FromPretrained(Path.Combine(zooFolder, "pretrained"));
        var experts = SuiteTask.All.Select(t => ClipVisionModel.FromPretrained(Path.Combine(zooFolder, t.Name))).ToList();
        var heads = SuiteTask.All.Select(t => TaskHead.Load(Path.Combine(zooFolder, "heads", $"{t.Name}.safetensors"))).ToList();
        var data = SuiteTask.All.Select(t => t.Load(dataFolder, "test", examples)).ToList();
        using var upscaled = ModelUpscaler.For(pretrained).WithExperts(experts).WithRouterDepth(depth).Build();
        var tasks = data.Select((d, i) => new ClassificationTask(d.Name, d, heads[i])).ToList();
        var text = new StringBuilder();
        void Report(int step)
        {
            var report = Evaluation.ModelEvaluator.Evaluate("WEMoE", upscaled, tasks, 250);
            text.AppendLine($"step {step}: average {report.AverageAccuracy * 100:F1}: " + string.Join(", ", report.Scores.Select(s => $"{s.Task} {s.Accuracy * 100:F1}")));
            for (int i = 0; i < data.Count; i++)
            {
                var map = Analysis.RoutingAnalysis.AverageRouting(upscaled, data[i], 250);
                var w = map.ToArray();
                var cells = Enumerable.Range(0, w.GetLength(0)).Select(m => "[" + string.Join(" ", Enumerable.Range(0, w.GetLength(1)).Select(e => w[m, e].ToString("F2", CultureInfo.InvariantCulture))) + "]");
                text.AppendLine($"  {data[i].Name,-20} " + string.Join(" ", cells));
            }
        }

        Report(0);
        int chunk = Math.Max(1, steps / 4);
        var trainer = new Training.AdaptationTrainer();
        var adaptable = upscaled;
        string checkpoint = Path.Combine(Path.GetTempPath(), $"diag-{Environment.ProcessId}");
        for (int done = 0; done < steps; done += chunk)
        {
            var options = new Training.AdaptationOptions { Steps = Math.Min(steps, done + chunk), LearningRate = learningRate, CheckpointFolder = checkpoint, ResumeFrom = done == 0 ? null : checkpoint };
            var result = trainer.Adapt(adaptable, tasks, options);
            text.AppendLine("  losses: " + string.Join(", ", result.FinalLosses.Select(kv => $"{kv.Key} {kv.Value:F3}")));
            Report(options.Steps);
            Console.Write(text);
            text.Clear();
        }

        experts.ForEach(e => e.Dispose());
        heads.ForEach(h => h.Dispose());
        data.ForEach(d => d.Dispose());
        return text.ToString();
    }

    private static (double Accuracy, double Entropy) Score(ClipVisionModel model, TaskHead head, TaskDataset data)
    {
        using var noGrad = no_grad();
        model.eval();
        long correct = 0, count = 0;
        double entropy = 0;
        foreach (var batch in data.Batches(500))
        {
            using var scope = NewDisposeScope();
            using (batch)
            {
                var logits = head.forward(model.GetImageFeatures(batch.Images));
                correct += logits.argmax(1).eq(batch.Labels!).sum().item<long>();
                entropy += EntropyLoss.Compute(logits).item<float>() * batch.Images.shape[0];
                count += batch.Images.shape[0];
            }
        }

        return ((double)correct / count, entropy / count);
    }
}
