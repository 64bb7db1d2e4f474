using TorchSharp;
using TorchSharp.Modules;
using WeightEnsembling.Models;
using static TorchSharp.torch;

namespace WeightEnsembling.Clip;

/// <summary>
/// The input embeddings of a CLIP text tower (HF <c>CLIPTextEmbeddings</c>): learned <c>token_embedding</c> rows plus
/// learned <c>position_embedding</c> rows for positions 0..N-1. Maps token ids [B, N] to tokens [B, N, D]. HF's
/// <c>position_ids</c> buffer is not a parameter (positions are always 0..N-1) and is not part of the state dict.
/// </summary>
public sealed class ClipTextEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;

    /// <summary>Creates the embeddings of the given architecture with randomly initialised parameters.</summary>
    /// <param name="config">The architecture.</param>
    public ClipTextEmbeddings(ClipTextConfig config) : base(nameof(ClipTextEmbeddings))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        // A model may be built inside a caller's dispose scope: its parameters must not die with it.
        (token_embedding, position_embedding) = DisposeScopes.Escaping(() => (
            nn.Embedding(config.VocabSize, config.HiddenSize),
            nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize)));
        RegisterComponents();
    }

    /// <summary>The architecture.</summary>
    public ClipTextConfig Config { get; }

    /// <summary>The token embedding table (<c>token_embedding</c>), shape [vocab_size, hidden_size].</summary>
    public Embedding TokenEmbedding => token_embedding;

    /// <summary>The position embedding table (<c>position_embedding</c>), shape [max_position_embeddings, hidden_size].</summary>
    public Embedding PositionEmbedding => position_embedding;

    /// <summary>Embeds a batch of token ids.</summary>
    /// <param name="input">Token ids, an integer tensor of shape [B, N] with 1 ≤ N ≤ <c>max_position_embeddings</c>.</param>
    /// <returns>The token embeddings, shape [B, N, <c>hidden_size</c>].</returns>
    /// <exception cref="ArgumentException">The ids have the wrong dtype or shape, or an id is outside [0, vocab_size).</exception>
    public override Tensor forward(Tensor input)
    {
        CheckInputIds(input, Config);
        using var scope = torch.NewDisposeScope();
        long tokens = input.shape[1];
        var weight = token_embedding.weight!;
        var embedded = token_embedding.forward(input.to(ScalarType.Int64, weight.device));
        var positions = position_embedding.weight!.narrow(0, 0, tokens).unsqueeze(0);
        var result = embedded + positions;
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Checks token ids against the architecture, naming <c>input_ids</c> in the message.</summary>
    internal static void CheckInputIds(Tensor inputIds, ClipTextConfig config)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.dtype is not (ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte))
        {
            throw new ArgumentException($"input_ids must be an integer tensor, got {inputIds.dtype}.", nameof(inputIds));
        }

        if (inputIds.dim() != 2 || inputIds.shape[0] == 0 || inputIds.shape[1] == 0)
        {
            throw new ArgumentException(
                $"input_ids must have shape [B, N] with B, N > 0, got [{string.Join(", ", inputIds.shape)}].", nameof(inputIds));
        }

        if (inputIds.shape[1] > config.MaxPositionEmbeddings)
        {
            throw new ArgumentException(
                $"input_ids has {inputIds.shape[1]} tokens per text, more than max_position_embeddings ({config.MaxPositionEmbeddings}).",
                nameof(inputIds));
        }

        using var scope = torch.NewDisposeScope();
        var ids = inputIds.to_type(ScalarType.Int64);
        long min = ids.min().item<long>(), max = ids.max().item<long>();
        if (min < 0 || max >= config.VocabSize)
        {
            throw new ArgumentException(
                $"input_ids has ids in [{min}, {max}], outside [0, vocab_size = {config.VocabSize}).", nameof(inputIds));
        }
    }
}
