"""Multimodal benchmarks: specs (``eval/*.yaml``), dataset loaders and scorers.

``load_spec("gqa")`` → ``load_samples(spec, data_path, limit)`` → (generation) →
``score_predictions(spec, predictions, out_dir, judge)``.
"""

from hfprune.evaluation.benchmarks.base import BenchmarkSample, Prediction
from hfprune.evaluation.benchmarks.judge import JudgeConfig
from hfprune.evaluation.benchmarks.loaders import LOADERS, register_loader
from hfprune.evaluation.benchmarks.samples import load_samples
from hfprune.evaluation.benchmarks.scorers import SCORERS, register_scorer
from hfprune.evaluation.benchmarks.scoring import score_predictions
from hfprune.evaluation.benchmarks.spec import BenchmarkSpec, list_specs, load_spec, parse_spec

__all__ = [
    "BenchmarkSample",
    "BenchmarkSpec",
    "JudgeConfig",
    "LOADERS",
    "Prediction",
    "SCORERS",
    "list_specs",
    "load_samples",
    "load_spec",
    "parse_spec",
    "register_loader",
    "register_scorer",
    "score_predictions",
]
