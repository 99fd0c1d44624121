"""Scoring a benchmark's predictions with its spec's scorer, in a scoring style, with the judge where it needs one."""

from __future__ import annotations

from pathlib import Path

from hfprune.errors import HfpruneError
from hfprune.evaluation.benchmarks.base import Prediction
from hfprune.evaluation.benchmarks.judge import NO_JUDGE, JudgeConfig
from hfprune.evaluation.benchmarks.scorers import JUDGE_CACHE, SCORERS
from hfprune.evaluation.benchmarks.spec import BenchmarkSpec
from hfprune.evaluation.benchmarks.styles import get_style


def score_predictions(spec: BenchmarkSpec, predictions: list[Prediction], out_dir: Path,
                      judge: JudgeConfig | None = None, style: str | None = None) -> dict:
    """Score a benchmark's predictions with its spec's scorer, read in ``style`` (default: the spec's).

    Returns the scorer's result with the style's name under ``style``. A judge scorer uses
    ``judge`` or, without it, the judge configured in the environment (:meth:`JudgeConfig.resolve`),
    and caches its grades in ``out_dir/judge_cache.jsonl``.
    """
    if not predictions:
        raise HfpruneError(f"benchmark '{spec.name}': there are no predictions to score")
    scorer = SCORERS[spec.scorer.name]
    chosen = get_style(style or spec.scoring.style)
    options = {**spec.scorer.options, "style": chosen}
    if scorer.needs_judge:
        judge = judge or JudgeConfig.resolve()
        if judge is None:
            raise HfpruneError(NO_JUDGE)
        options.update(judge=judge, cache_path=Path(out_dir) / JUDGE_CACHE)
    return {**scorer.score(predictions, **options), "style": chosen.name}
