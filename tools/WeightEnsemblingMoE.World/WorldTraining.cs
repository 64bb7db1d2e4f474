using WeightEnsembling.Clip;
using WeightEnsembling.Tasks;
using static TorchSharp.torch;

namespace WeightEnsembling.World;

/// <summary>The world's training loops: CLIP's contrastive pre-training of both towers, and an expert's fine-tuning of the image tower through a frozen head.</summary>
public static class WorldTraining
{
    /// <summary>
    /// CLIP's objective: the symmetric InfoNCE loss of a batch, the mean of the cross-entropies of the image→text and
    /// text→image logits (<c>exp(logit_scale)</c> times the cosine similarities), matching pairs on the diagonal.
    /// </summary>
    public static Tensor ContrastiveLoss(ClipModel clip, Tensor pixelValues, Tensor inputIds, Tensor attentionMask)
    {
        ArgumentNullException.ThrowIfNull(clip);
        using var scope = NewDisposeScope();
        return SymmetricInfoNce(clip.GetImageFeatures(pixelValues), clip.GetTextFeatures(inputIds, attentionMask), clip.LogitScale).MoveToOuterDisposeScope();
    }

    /// <summary>The symmetric InfoNCE loss of paired features [B, D] (row i of each is a pair) at the log-scale <paramref name="logitScale"/>.</summary>
    public static Tensor SymmetricInfoNce(Tensor imageFeatures, Tensor textFeatures, Tensor logitScale)
    {
        ArgumentNullException.ThrowIfNull(imageFeatures);
        ArgumentNullException.ThrowIfNull(textFeatures);
        ArgumentNullException.ThrowIfNull(logitScale);
        if (imageFeatures.shape[0] != textFeatures.shape[0])
        {
            throw new ArgumentException($"{imageFeatures.shape[0]} image features but {textFeatures.shape[0]} text features; the pairs must match.", nameof(textFeatures));
        }

        using var scope = NewDisposeScope();
        var image = nn.functional.normalize(imageFeatures, dim: 1);
        var text = nn.functional.normalize(textFeatures, dim: 1);
        var logits = logitScale.exp() * image.matmul(text.t());
        var targets = arange(logits.shape[0], dtype: ScalarType.Int64);
        var loss = (nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.t(), targets)) / 2;
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>Pre-trains both towers with Adam on random batches of the pool; returns the loss of each step.</summary>
    public static List<float> Pretrain(ClipModel clip, Tensor images, Tensor inputIds, Tensor attentionMask, PretrainingSpec spec, int seed, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(clip);
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(log);
        using var optimizer = optim.Adam(clip.parameters(), lr: spec.LearningRate);
        using var generator = new Generator((ulong)seed);
        var losses = new List<float>();
        clip.train();
        for (int step = 0; step < spec.Steps; step++)
        {
            using var scope = NewDisposeScope();
            var index = randperm(images.shape[0], generator: generator).narrow(0, 0, spec.BatchSize);
            optimizer.zero_grad();
            var loss = ContrastiveLoss(clip, images.index_select(0, index), inputIds.index_select(0, index), attentionMask.index_select(0, index));
            loss.backward();
            optimizer.step();
            using (no_grad())
            {
                // CLIP clips the temperature at 100.
                clip.LogitScale.clamp_(0, Math.Log(100));
            }

            losses.Add(loss.item<float>());
            if ((step + 1) % Math.Max(1, spec.Steps / 10) == 0 || step == 0)
            {
                log($"pre-training step {step + 1}/{spec.Steps}: contrastive loss {losses[^1]:F3}");
            }
        }

        clip.eval();
        return losses;
    }

    /// <summary>Fine-tunes an image tower (with its projection) through a frozen head with AdamW; returns the loss of each step.</summary>
    public static List<float> FineTune(ClipVisionModel expert, TaskHead head, TaskDataset train, FineTuningSpec spec, int seed)
    {
        ArgumentNullException.ThrowIfNull(expert);
        ArgumentNullException.ThrowIfNull(head);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(spec);
        foreach (var p in head.parameters())
        {
            p.requires_grad = false;
        }

        using var optimizer = optim.AdamW(expert.parameters(), lr: spec.LearningRate, weight_decay: spec.WeightDecay);
        using var generator = new Generator((ulong)seed);
        using var batches = train.Endless(spec.BatchSize, seed).GetEnumerator();
        var losses = new List<float>();
        expert.train();
        for (int step = 0; step < spec.Steps; step++)
        {
            using var scope = NewDisposeScope();
            batches.MoveNext();
            using var batch = batches.Current;
            optimizer.zero_grad();
            var images = spec.Jitter > 0 ? Jitter(batch.Images, spec.Jitter, generator) : batch.Images;
            var loss = nn.functional.cross_entropy(head.forward(expert.GetImageFeatures(images)), batch.Labels!);
            loss.backward();
            optimizer.step();
            losses.Add(loss.item<float>());
        }

        expert.eval();
        return losses;
    }

    /// <summary>
    /// Each image [B, C, H, W] rescaled by a factor in [1 − <paramref name="amount"/>, 1 + <paramref name="amount"/>] and
    /// shifted by up to ±<paramref name="amount"/> of its side, drawn per image from <paramref name="generator"/>
    /// (bilinear, edge pixels repeated beyond the border).
    /// </summary>
    public static Tensor Jitter(Tensor images, double amount, Generator generator)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(generator);
        using var scope = NewDisposeScope();
        long b = images.shape[0];
        // The sampling grid maps output to input coordinates, so a zoom by s reads the input at 1/s.
        var scale = 1 / (1 + (amount * ((2 * rand(b, generator: generator)) - 1)));
        var shift = amount * 2 * ((2 * rand(b, 2, generator: generator)) - 1);
        var zero = zeros(b);
        var theta = stack([scale, zero, shift[.., 0], zero, scale, shift[.., 1]], 1).view(b, 2, 3).to(images.dtype);
        var grid = nn.functional.affine_grid(theta, images.shape, align_corners: false);
        var result = nn.functional.grid_sample(images, grid, GridSampleMode.Bilinear, GridSamplePaddingMode.Border, align_corners: false);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Accuracy (0–1) of an image tower and a head on a labelled set.</summary>
    public static double Accuracy(ClipVisionModel model, TaskHead head, TaskDataset data)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(head);
        ArgumentNullException.ThrowIfNull(data);
        using var noGrad = no_grad();
        model.eval();
        long correct = 0, total = 0;
        foreach (var batch in data.Batches(256))
        {
            using (batch)
            using (var scope = NewDisposeScope())
            {
                var predicted = head.forward(model.GetImageFeatures(batch.Images)).argmax(1);
                correct += predicted.eq(batch.Labels!).sum().item<long>();
                total += batch.Count;
            }
        }

        return (double)correct / total;
    }
}
