"""Scorers: from predictions to per-sample scores and a benchmark's metrics.

Every scorer returns ``{"metrics": {...}, "per_sample": [...]}``. ``metrics`` is flat: the
headline ``score`` (0-100), ``num_samples`` and extra numbers (``adversarial.f1``, ``cap.ocr``,
...), all percentages except counts. Each ``per_sample`` entry has ``sample_id``, ``score`` (0-1)
and ``parsed`` (what the scorer read from the output). Scorers are registered by name; their
keyword-only parameters are the ``scorer.options`` a spec may set, except ``style`` (the
:class:`~hfprune.evaluation.benchmarks.styles.ScoringStyle` that reads the answers), ``judge`` and
``cache_path``, which :func:`score_predictions` passes.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Callable, Optional

from hfprune.errors import HfpruneError
from hfprune.evaluation.benchmarks.base import Prediction
from hfprune.evaluation.benchmarks.judge import NO_JUDGE, JudgeCache, JudgeConfig, grade
from hfprune.evaluation.benchmarks.styles import ScoringStyle, get_style
from hfprune.evaluation.benchmarks.vqa_normalize import normalize_answer, vqa_accuracy


JUDGE_CACHE = "judge_cache.jsonl"
_INJECTED = ("style", "judge", "cache_path")


@dataclass(frozen=True)
class Scorer:
    score: Callable[..., dict]
    needs_judge: bool = False  # called with judge=JudgeConfig and cache_path=Path

    @property
    def option_names(self) -> tuple[str, ...]:
        parameters = inspect.signature(self.score).parameters.values()
        return tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in _INJECTED)


SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str, *, needs_judge: bool = False):
    """Decorator: register ``function(predictions, *, options...)`` as scorer ``name``."""

    def decorate(function):
        SCORERS[name] = Scorer(function, needs_judge)
        return function

    return decorate


def _result(per_sample: list[dict], **extra: float) -> dict:
    metrics = {"score": 100 * mean(s["score"] for s in per_sample), "num_samples": len(per_sample), **extra}
    return {"metrics": metrics, "per_sample": per_sample}


def _references(prediction: Prediction, what: str) -> list[str]:
    if not prediction.references:
        raise HfpruneError(f"{what}: sample '{prediction.sample_id}' has no reference answer")
    return prediction.references


@register_scorer("exact_match")
def exact_match(predictions: list[Prediction], *, style: ScoringStyle) -> dict:
    """GQA: the output, read by the style, matches a reference."""
    per_sample = []
    for p in predictions:
        readings = [style.gqa(p.output, reference) for reference in _references(p, "exact match")]
        hit = any(correct for _, correct in readings)
        per_sample.append({"sample_id": p.sample_id, "score": float(hit), "parsed": readings[0][0]})
    return _result(per_sample)


@register_scorer("choice_letter")
def choice_letter(predictions: list[Prediction], *, style: ScoringStyle) -> dict:
    """ScienceQA: the option letter the style reads from the output is the reference letter."""
    per_sample = []
    for p in predictions:
        choices = p.meta.get("choices")
        reference = _references(p, "choice letter")[0]
        parsed, hit = style.sqa(p.output, reference, None if choices is None else len(choices))
        per_sample.append({"sample_id": p.sample_id, "score": float(hit), "parsed": parsed})
    return _result(per_sample)


@register_scorer("vqa_accuracy")
def vqa_accuracy_scorer(predictions: list[Prediction], *, style: ScoringStyle) -> dict:
    """TextVQA: VQA accuracy over the human answers, after EvalAI normalisation (the same in every style)."""
    per_sample = [
        {"sample_id": p.sample_id, "score": vqa_accuracy(p.output, _references(p, "VQA accuracy")),
         "parsed": normalize_answer(p.output)}
        for p in predictions
    ]
    return _result(per_sample)


def binary_metrics(pairs: list[tuple[Optional[str], str]], yes_ratio_of_references: bool = False) -> dict[str, float]:
    """Accuracy, precision, recall, F1 ('yes' = positive) and the yes-ratio, in %, of (parsed, truth) pairs.

    A parsed answer that is neither 'yes' nor 'no' (None) is wrong and counts in neither class. The
    yes-ratio is the share of 'yes' predictions, or of 'yes' references when asked (lmms-eval's).
    A precision or recall with nothing to count is 0 (where LLaVA's eval_pope.py would divide by
    zero; TinyLLaVA Factory's copy adds 1e-6 to the denominators, under 1e-4 points of difference).
    """
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    fn = sum(p == "no" and t == "yes" for p, t in pairs)
    tn = sum(p == "no" and t == "no" for p, t in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100 * (tp + tn) / len(pairs),
        "precision": 100 * precision,
        "recall": 100 * recall,
        "f1": 100 * f1,
        "yes_ratio": 100 * (sum(t == "yes" for _, t in pairs) if yes_ratio_of_references else tp + fp) / len(pairs),
    }


@register_scorer("pope")
def pope(predictions: list[Prediction], *, style: ScoringStyle, group_by: str = "category") -> dict:
    """POPE: yes/no metrics per split (``meta[group_by]``); the score is the mean F1 over splits."""
    groups: dict[str, list[tuple[str, str]]] = {}
    per_sample = []
    for p in predictions:
        truth = p.references[0].strip().lower() if p.references else ""
        if truth not in ("yes", "no"):
            raise HfpruneError(f"POPE: sample '{p.sample_id}' has reference {p.references!r}, expected 'yes' or 'no'")
        parsed, split = style.pope(p.output), str(p.meta.get(group_by, "all"))
        groups.setdefault(split, []).append((parsed, truth))
        per_sample.append({"sample_id": p.sample_id, "score": float(parsed == truth), "parsed": parsed, "split": split})
    extra: dict[str, float] = {}
    for split in sorted(groups):
        metrics = binary_metrics(groups[split], style.pope_yes_ratio_of_references)
        extra.update({f"{split}.{name}": value for name, value in metrics.items()})
        extra[f"{split}.num_samples"] = len(groups[split])
    result = _result(per_sample, **extra)
    result["metrics"]["score"] = mean(extra[f"{split}.f1"] for split in groups)
    return result


@register_scorer("mmvet_judge", needs_judge=True)
def mmvet_judge(predictions: list[Prediction], *, style: ScoringStyle, judge: JudgeConfig, cache_path: Path,
                max_tokens: int = 16, asks: int = 3) -> dict:
    """MM-Vet: an LLM judge grades each answer 0-1; means overall and per capability, in %."""
    cache = JudgeCache(cache_path)
    per_sample, by_capability = [], {}
    for p in predictions:
        question = str(p.meta.get("question", ""))
        graded = grade(judge, cache, question, p.references[0], p.output, read=style.judge_grade, style=style.name,
                       max_tokens=max_tokens, asks=asks)
        per_sample.append(
            {"sample_id": p.sample_id, "score": graded["score"], "parsed": graded["score"],
             "reply": graded["reply"], "unparsed": graded["unparsed"]}
        )
        for capability in p.meta.get("capabilities", []):
            by_capability.setdefault(capability, []).append(graded["score"])
    extra = {f"cap.{c}": 100 * mean(scores) for c, scores in sorted(by_capability.items())}
    extra["unparsed"] = sum(s["unparsed"] for s in per_sample)
    return _result(per_sample, **extra)
