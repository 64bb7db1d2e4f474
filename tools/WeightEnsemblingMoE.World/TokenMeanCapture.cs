using TorchSharp;
using static TorchSharp.torch;

namespace WeightEnsembling.World;

/// <summary>
/// Stands in an encoder layer's MLP slot: records the token average of the MLP's input (what WEMoE's router reads) and
/// runs the MLP unchanged.
/// </summary>
internal sealed class TokenMeanCapture : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> mlp;

    public TokenMeanCapture(nn.Module<Tensor, Tensor> mlp) : base(nameof(TokenMeanCapture))
    {
        this.mlp = mlp;
        RegisterComponents();
    }

    /// <summary>The recorded token averages, one [B, D] CPU tensor per forward call (owned here).</summary>
    public List<Tensor> Captured { get; } = [];

    public override Tensor forward(Tensor input)
    {
        Captured.Add(input.mean([1]).detach().cpu().clone().DetachFromDisposeScope());
        return mlp.forward(input);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            Captured.ForEach(t => t.Dispose());
            Captured.Clear();
        }

        // The wrapped MLP belongs to the model it was taken from.
    }
}
