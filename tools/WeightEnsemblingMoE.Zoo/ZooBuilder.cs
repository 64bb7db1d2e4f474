using System.Diagnostics;
using TorchSharp;
using WeightEnsembling.Clip;
using WeightEnsembling.SafeTensors;
using WeightEnsembling.Tasks;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Zoo;

/// <summary>
/// Builds the suite's model zoo, all seeded: a small CLIP-architecture vision transformer "pre-trained" by rotation
/// prediction on the pre-training pools (disjoint from every other split; the objective does not solve the tasks), one
/// head per task of CLIP's zero-shot form fitted on the pre-trained features and frozen (CLIP's zero-shot head in the
/// papers), and one fine-tuned encoder per task (encoder trained, head frozen).
/// </summary>
public static class ZooBuilder
{
    /// <summary>28×28 grey input, patch 4 → 49 patches + class token = 50 tokens (as ViT-B/32), width 64, 4 layers.</summary>
    public static readonly ClipVisionConfig Config = new()
    {
        HiddenSize = 64,
        IntermediateSize = 256,
        NumHiddenLayers = 4,
        NumAttentionHeads = 4,
        ImageSize = 28,
        PatchSize = 4,
        NumChannels = 1,
        ProjectionDim = 32,
    };

    public static void Build(string dataFolder, string zooFolder, int seed, int pretrainSteps, int finetuneSteps, Action<string> log)
    {
        torch.manual_seed(seed);
        var watch = Stopwatch.StartNew();
        // The pre-trained encoder does not depend on the heads or the fine-tuning: one already in the folder (from an
        // earlier build with the same data, seed and steps) is reused, so heads and experts can be rebuilt alone.
        string pretrainedFolder = Path.Combine(zooFolder, "pretrained");
        using var pretrained = File.Exists(Path.Combine(pretrainedFolder, SafeTensorsWriter.SingleFileName))
            ? ClipVisionModel.FromPretrained(pretrainedFolder)
            : new ClipVisionModel(Config);
        if (!File.Exists(Path.Combine(pretrainedFolder, SafeTensorsWriter.SingleFileName)))
        {
            Pretrain(pretrained, dataFolder, seed, pretrainSteps, log);
            Save(pretrained, pretrainedFolder);
            log($"pre-trained in {watch.Elapsed.TotalSeconds:F0} s");
        }
        else
        {
            log($"reusing the pre-trained encoder in {pretrainedFolder}");
        }

        pretrained.eval();

        foreach (var task in SuiteTask.All)
        {
            using var train = task.Load(dataFolder, "train");
            using var head = FitHead(pretrained, train);
            Directory.CreateDirectory(Path.Combine(zooFolder, "heads"));
            head.Save(Path.Combine(zooFolder, "heads", $"{task.Name}.safetensors"));
            using var expert = new ClipVisionModel(Config);
            StateDict.LoadInto(expert, pretrained.state_dict());
            FineTune(expert, head, train, seed, finetuneSteps);
            Save(expert, Path.Combine(zooFolder, task.Name));
            log($"{task.Name}: head fitted, encoder fine-tuned ({watch.Elapsed.TotalSeconds:F0} s)");
        }
    }

    /// <summary>Saves a model as an HF folder in float16 (half the bytes; loading converts back to float32).</summary>
    public static void Save(ClipVisionModel model, string folder)
    {
        Directory.CreateDirectory(folder);
        model.SaveTo(folder);
        string weights = Path.Combine(folder, SafeTensorsWriter.SingleFileName);
        var half = model.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().to(ScalarType.Float16));
        SafeTensorsWriter.Save(weights, half, new Dictionary<string, string> { ["format"] = "pt" });
        foreach (var tensor in half.Values)
        {
            tensor.Dispose();
        }
    }

    private static void Pretrain(ClipVisionModel model, string dataFolder, int seed, int steps, Action<string> log)
    {
        // Rotation prediction (0°, 90°, 180°, 270°) on the pooled pre-training splits of the three datasets.
        var pools = SuiteData.Datasets.Select(d => SuiteData.Load(dataFolder, d, "pretrain")).ToList();
        using var pool = cat(pools.Select(p => p.Images.to(ScalarType.Float32)).ToArray(), 0).unsqueeze(1).div(255f).sub(0.5f).div(0.5f);
        pools.ForEach(p => { p.Images.Dispose(); p.Labels.Dispose(); });
        using var rotationHead = nn.Linear(Config.ProjectionDim, 4);
        var parameters = model.parameters().Concat(rotationHead.parameters()).ToList();
        using var optimizer = optim.AdamW(parameters, lr: 1e-3, weight_decay: 0.01);
        using var generator = new Generator((ulong)seed);
        model.train();
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            var index = randint(0, pool.shape[0], [128], generator: generator);
            var rotations = randint(0, 4, [128], generator: generator);
            var images = pool.index_select(0, index);
            var all = stack(Enumerable.Range(0, 4).Select(k => images.rot90(k, (2, 3))).ToArray()); // [4, B, 1, 28, 28]
            var rotated = all[TensorIndex.Tensor(rotations), TensorIndex.Tensor(arange(128))];
            optimizer.zero_grad();
            var loss = nn.functional.cross_entropy(rotationHead.forward(model.GetImageFeatures(rotated)), rotations);
            loss.backward();
            optimizer.step();
            if ((step + 1) % 100 == 0)
            {
                log($"pre-training step {step + 1}/{steps}: rotation loss {loss.item<float>():F3}");
            }
        }

        model.eval();
    }

    // CLIP's zero-shot head is a scaled cosine similarity between the normalised image embedding and one unit vector per
    // class. Its stand-in here has the same form (a ZeroShotClassificationHead): the class vectors start at the normalised
    // class means of the pre-trained features and are fitted with the logit scale (capped at CLIP's 100) on those features.
    // A plain linear head would reward the norm of the features, so that entropy could be lowered by scaling task vectors
    // up rather than by routing to the right expert (docs/results/README.md shows the evidence).
    private static ZeroShotClassificationHead FitHead(ClipVisionModel model, TaskDataset train)
    {
        using var features = Features(model, train);
        using var normalised = nn.functional.normalize(features, dim: 1);
        using var labels = cat(train.Batches(512).Select(b => { using (b) { return b.Labels!.alias(); } }).ToArray(), 0);
        using var means = zeros(10, Config.ProjectionDim).index_add_(0, labels, normalised, 1);
        using var classes = nn.Parameter(nn.functional.normalize(means, dim: 1));
        using var logScale = nn.Parameter(tensor((float)Math.Log(10.0)));
        using var optimizer = optim.Adam([classes, logScale], lr: 1e-2);
        for (int step = 0; step < 300; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var logits = logScale.exp() * normalised.matmul(nn.functional.normalize(classes, dim: 1).t());
            var loss = nn.functional.cross_entropy(logits, labels);
            loss.backward();
            optimizer.step();
            using (no_grad())
            {
                logScale.clamp_(max: Math.Log(100.0));
            }
        }

        using var unit = nn.functional.normalize(classes.detach(), dim: 1);
        return new ZeroShotClassificationHead(unit, logScale.item<float>());
    }

    private static Tensor Features(ClipVisionModel model, TaskDataset data)
    {
        using var noGrad = no_grad();
        return cat(data.Batches(512).Select(b => { using (b) { return model.GetImageFeatures(b.Images); } }).ToArray(), 0);
    }

    private static void FineTune(ClipVisionModel expert, TaskHead head, TaskDataset train, int seed, int steps)
    {
        using var optimizer = optim.AdamW(expert.parameters(), lr: 5e-4, weight_decay: 0.01);
        expert.train();
        using var batches = train.Endless(64, seed).GetEnumerator();
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            batches.MoveNext();
            using var batch = batches.Current;
            optimizer.zero_grad();
            var loss = nn.functional.cross_entropy(head.forward(expert.GetImageFeatures(batch.Images)), batch.Labels!);
            loss.backward();
            optimizer.step();
        }

        expert.eval();
    }
}
