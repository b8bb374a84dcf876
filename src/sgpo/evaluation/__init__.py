"""Evaluation: benchmarks, the harness, metrics, training-run reports and the selectivity view.

- `benchmarks`   the registry (aime24, aime25, amc23, math500, minerva, olympiadbench) and loading
- `generation`   k completions per prompt: HF generate, or vLLM on a GPU
- `harness`      `evaluate_records` → `EvalResult` (avg@k, pass@k, 95% interval, per-sample verdicts)
- `metrics`      avg@k, the unbiased pass@k estimator, Wilson intervals
- `suite`        several benchmarks, results.json / results.md / per-sample JSONL, resumable
- `report`       the HTML report of a training run (`sgpo report`)
- `selectivity`  per-token KL(teacher‖student) on guided trajectories (`sgpo selectivity`)
"""

from sgpo.evaluation.benchmarks import BENCHMARKS, Benchmark, BenchmarkSpec, load_benchmark, load_benchmarks
from sgpo.evaluation.harness import EvalConfig, EvalResult, evaluate_records, make_generator
from sgpo.evaluation.metrics import avg_at_k, interval95, mean_pass_at_k, pass_at_k, wilson_interval
from sgpo.evaluation.suite import default_out_dir, markdown_table, model_identity, run_suite

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkSpec",
    "EvalConfig",
    "EvalResult",
    "avg_at_k",
    "default_out_dir",
    "evaluate_records",
    "interval95",
    "load_benchmark",
    "load_benchmarks",
    "make_generator",
    "markdown_table",
    "mean_pass_at_k",
    "model_identity",
    "pass_at_k",
    "run_suite",
    "wilson_interval",
]
