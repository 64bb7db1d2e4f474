using WeightEnsembling.Evaluation;
using WeightEnsembling.Models;

namespace WeightEnsembling.Experiments;

/// <summary>What one method achieved in a <see cref="MergingBenchmark"/> run.</summary>
/// <param name="Method">The method.</param>
/// <param name="Report">Test accuracy per task and the average.</param>
/// <param name="Elapsed">Wall time of the method: merging, λ search, training and evaluation.</param>
/// <param name="Parameters">The parameter counts of the model the method produces (null for the per-task individual models).</param>
/// <param name="Detail">A short note, e.g. the λ chosen on validation.</param>
public sealed record MethodResult(MergingMethod Method, EvaluationReport Report, TimeSpan Elapsed, ParameterCount? Parameters, string Detail);
