using static TorchSharp.torch;

namespace WeightEnsembling.Models;

/// <summary>Helpers for TorchSharp dispose scopes.</summary>
internal static class DisposeScopes
{
    /// <summary>
    /// Runs <paramref name="build"/> in a fresh dispose scope and detaches everything it created from every scope, so that
    /// parameters made while a caller's scope is open (a model built inside <c>NewDisposeScope()</c>) outlive that scope.
    /// TorchSharp tracks some module parameters (nn.Embedding's, a hand-made <c>Parameter</c>) in the current scope.
    /// </summary>
    public static T Escaping<T>(Func<T> build)
    {
        using var scope = NewDisposeScope();
        var result = build();
        scope.Detach(scope.DisposablesView.ToArray());
        return result;
    }
}
