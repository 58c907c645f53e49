"""Benchmarks (registry, loading), sampling + grading (`evaluate_problems`, shared with the trainer's
validation), scores (avg@k, pass@k, maj@k) and the `aent eval` pipeline (`suite.run_eval`)."""
from aent_cli.eval.benchmarks import BENCHMARKS, Benchmark, BenchmarkError
from aent_cli.eval.runner import BenchResult, ProblemResult, evaluate_problems
from aent_cli.eval.scores import bench_scores, metric_name, pass_at_k

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkError", "BenchResult", "ProblemResult", "bench_scores",
           "evaluate_problems", "metric_name", "pass_at_k"]
