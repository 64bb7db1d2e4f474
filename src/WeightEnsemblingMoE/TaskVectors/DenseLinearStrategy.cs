namespace WeightEnsembling.TaskVectors;

/// <summary>How a dense storage computes a per-sample linear layer (see <see cref="DenseTaskVectorStorage.ChooseStrategy"/>).</summary>
internal enum DenseLinearStrategy
{
    /// <summary>Materialise the B merged weight sets with one matmul, then one batched matmul.</summary>
    Materialise,

    /// <summary>Run every task's weight on every token in one matmul, then a per-sample weighted sum over tasks.</summary>
    AllTasks,
}
