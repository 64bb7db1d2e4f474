using System.Security.Cryptography;
using System.Text;
using WeightEnsembling.SafeTensors;
using static TorchSharp.torch;

namespace WeightEnsembling.Training;

/// <summary>SHA-256 over named tensors: each name, dtype, shape and raw bytes, in ordinal name order.</summary>
internal static class WeightFingerprint
{
    public static string Of(IEnumerable<KeyValuePair<string, Tensor>> tensors, string salt)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes(salt + "\n"));
        foreach (var (name, tensor) in tensors.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            hash.AppendData(Encoding.UTF8.GetBytes($"{name}|{tensor.dtype}|{string.Join(",", tensor.shape)}\n"));
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var contiguous = tensor.detach().cpu().contiguous();
            TensorBytes.Visit(contiguous, (span, _) => hash.AppendData(span));
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}
