using TorchSharp;
using static TorchSharp.torch;
using WeightEnsembling.TaskVectors;

namespace WeightEnsembling.Tests.TaskVectors;

[TestFixture, NonParallelizable]
public sealed class TaskVectorDictionaryTests
{
    private static Dictionary<string, Tensor> Model(float weight, float bias) => new()
    {
        ["fc1.weight"] = full(3, 2, weight),
        ["fc1.bias"] = full(3, bias),
    };

    [Test]
    public void Create_Dense_StoresDifferencesUnderOriginalNames()
    {
        using var scope = NewDisposeScope();
        using var dictionary = TaskVectorDictionary.Create(
            Model(1, 0), [Model(3, 1), Model(0, -2)], TaskVectorStorageOptions.Dense());
        Assert.That(dictionary.ParameterNames, Is.EqualTo(new[] { "fc1.weight", "fc1.bias" }));
        Assert.That(dictionary.TaskCount, Is.EqualTo(2));
        Assert.That(dictionary["fc1.weight"].ToDense(0).mean().item<float>(), Is.EqualTo(2f));
        Assert.That(dictionary["fc1.weight"].ToDense(1).mean().item<float>(), Is.EqualTo(-1f));
        Assert.That(dictionary["fc1.bias"].ToDense(1).mean().item<float>(), Is.EqualTo(-2f));
        Assert.That(dictionary.ElementCount, Is.EqualTo(2 * 6 + 2 * 3));
    }

    [Test]
    public void Create_RegistersStoragesAsBuffersWithMappedNames()
    {
        using var scope = NewDisposeScope();
        using var dictionary = TaskVectorDictionary.Create(Model(1, 0), [Model(3, 1)], TaskVectorStorageOptions.Dense());
        var names = dictionary.named_buffers().Select(b => b.name).ToArray();
        Assert.That(names, Is.EquivalentTo(new[] { "fc1_weight.task_vectors", "fc1_bias.task_vectors" }));
    }

    [Test]
    public void To_MovesEveryStorage()
    {
        using var scope = NewDisposeScope();
        using var dictionary = TaskVectorDictionary.Create(Model(1, 0), [Model(3, 1)], TaskVectorStorageOptions.Sparse(0.5));
        dictionary.to(ScalarType.Float64);
        Assert.That(dictionary.buffers().Where(b => b.is_floating_point()).All(b => b.dtype == ScalarType.Float64), Is.True);
        Assert.That(dictionary["fc1.weight"].WeightedSum(tensor(new double[] { 1 })).dtype, Is.EqualTo(ScalarType.Float64));
    }

    [Test]
    public void Create_WithNoExperts_Throws()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => TaskVectorDictionary.Create(Model(1, 0), [], TaskVectorStorageOptions.Dense()));
        Assert.That(ex!.Message, Does.Contain("At least one"));
    }

    [Test]
    public void Create_WithMissingKey_ThrowsNamingExpertAndTensor()
    {
        using var scope = NewDisposeScope();
        var incomplete = Model(3, 1);
        incomplete.Remove("fc1.bias");
        var ex = Assert.Throws<ArgumentException>(() =>
            TaskVectorDictionary.Create(Model(1, 0), [Model(2, 2), incomplete], TaskVectorStorageOptions.Dense()));
        Assert.That(ex!.Message, Does.Contain("Expert 1").And.Contain("'fc1.bias'"));
    }

    [Test]
    public void Create_WithExtraKey_ThrowsNamingExpertAndTensor()
    {
        using var scope = NewDisposeScope();
        var extended = Model(3, 1);
        extended["fc2.weight"] = zeros(2, 2);
        var ex = Assert.Throws<ArgumentException>(() =>
            TaskVectorDictionary.Create(Model(1, 0), [extended], TaskVectorStorageOptions.Dense()));
        Assert.That(ex!.Message, Does.Contain("Expert 0").And.Contain("'fc2.weight'"));
    }

    [Test]
    public void Create_WithShapeMismatch_ThrowsNamingExpertAndTensor()
    {
        using var scope = NewDisposeScope();
        var wrong = Model(3, 1);
        wrong["fc1.weight"] = zeros(2, 3);
        var ex = Assert.Throws<ArgumentException>(() =>
            TaskVectorDictionary.Create(Model(1, 0), [wrong], TaskVectorStorageOptions.Dense()));
        Assert.That(ex!.Message, Does.Contain("Expert 0").And.Contain("'fc1.weight'").And.Contain("shape"));
    }

    [Test]
    public void Create_WithNaN_ThrowsNamingExpertAndTensor()
    {
        using var scope = NewDisposeScope();
        var broken = Model(3, 1);
        broken["fc1.bias"][1] = tensor(float.NaN);
        var ex = Assert.Throws<ArgumentException>(() =>
            TaskVectorDictionary.Create(Model(1, 0), [Model(2, 2), broken], TaskVectorStorageOptions.LowRank(1)));
        Assert.That(ex!.Message, Does.Contain("Expert 1").And.Contain("'fc1.bias'").And.Contain("NaN"));
    }

    [Test]
    public void Create_WithBadOption_ThrowsNamingOption()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() =>
            TaskVectorDictionary.Create(Model(1, 0), [Model(3, 1)], TaskVectorStorageOptions.Sparse(1.0)));
        Assert.That(ex!.ParamName, Is.EqualTo("SparsityRatio"));
    }

    [Test]
    public void Create_LowRank_KeepsOneDimensionalTensorsDense()
    {
        using var scope = NewDisposeScope();
        using var dictionary = TaskVectorDictionary.Create(Model(1, 0), [Model(3, 1)], TaskVectorStorageOptions.LowRank(1));
        Assert.That(dictionary["fc1.weight"].Kind, Is.EqualTo(TaskVectorStorageKind.LowRank));
        Assert.That(dictionary["fc1.bias"].Kind, Is.EqualTo(TaskVectorStorageKind.Dense));
        Assert.That(StorageTestData.MaxAbsDifference(dictionary["fc1.weight"].ToDense(0), full(3, 2, 2f)), Is.LessThan(1e-5f));
    }

    [Test]
    public void Create_EnumeratesExpertsOnceAndInOrder()
    {
        using var scope = NewDisposeScope();
        var enumerated = new List<int>();
        IEnumerable<IReadOnlyDictionary<string, Tensor>> Experts()
        {
            for (int i = 0; i < 3; i++)
            {
                enumerated.Add(i);
                using var expert = new DisposableModel(Model(i + 2, 0));
                yield return expert.Tensors;
            }
        }

        using var dictionary = TaskVectorDictionary.Create(Model(1, 0), Experts(), TaskVectorStorageOptions.Sparse(0.5));
        Assert.That(enumerated, Is.EqualTo(new[] { 0, 1, 2 }));
        Assert.That(dictionary["fc1.bias"].TaskCount, Is.EqualTo(3));
        Assert.That(dictionary["fc1.weight"].ToDense(2).abs().max().item<float>(), Is.EqualTo(0f),
            "a constant task vector has |τ| equal to its quantile everywhere, so the strict rule prunes all of it");
    }

    [Test]
    public void Indexer_WithUnknownName_ThrowsListingKnownNames()
    {
        using var scope = NewDisposeScope();
        using var dictionary = TaskVectorDictionary.Create(Model(1, 0), [Model(3, 1)], TaskVectorStorageOptions.Dense());
        var ex = Assert.Throws<KeyNotFoundException>(() => _ = dictionary["fc2.weight"]);
        Assert.That(ex!.Message, Does.Contain("fc2.weight").And.Contain("fc1.bias"));
    }

    /// <summary>An expert that disposes its tensors as soon as the consumer moves on, like a lazily loaded checkpoint.</summary>
    private sealed class DisposableModel(Dictionary<string, Tensor> tensors) : IDisposable
    {
        public IReadOnlyDictionary<string, Tensor> Tensors => tensors;

        public void Dispose()
        {
            foreach (var tensor in tensors.Values)
            {
                tensor.Dispose();
            }
        }
    }
}
