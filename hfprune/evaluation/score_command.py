"""``hfprune score BENCHMARK FILE``: score answers that any tool produced, with hfprune's scorers.

FILE is JSONL, one row per sample: ``prediction`` (the model's raw output) and the benchmark's
reference fields, named as in its Hub schema (:data:`ROW_FIELDS`); ``id`` or ``question_id`` names
the sample (default: its line number). Rows are numbered by line. The rows become
:class:`Prediction` s through the loader's own reference reader, so ``hfprune score`` and
``hfprune eval --rescore`` score the same answers the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from hfprune.errors import HfpruneError, reason
from hfprune.evaluation.benchmarks.base import Prediction
from hfprune.evaluation.benchmarks.judge import JudgeConfig
from hfprune.evaluation.benchmarks.loaders import LOADERS
from hfprune.evaluation.benchmarks.scoring import score_predictions
from hfprune.evaluation.benchmarks.spec import BenchmarkSpec, load_spec

Check = Callable[[Any], bool]


def _string(value) -> bool:
    return isinstance(value, str)


def _strings(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


def _index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _yes_no(value) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("yes", "no")


def _capability(value) -> bool:
    return _string(value) or _strings(value)


# loader -> (field, required, check, what the field must hold)
ROW_FIELDS: dict[str, tuple[tuple[str, bool, Check, str], ...]] = {
    "gqa": (("answer", True, _string, "the reference answer, a string"),),
    "textvqa": (("answers", True, _strings, "the human answers, a non-empty list of strings (10 in TextVQA)"),),
    "pope": (("answer", True, _yes_no, '"yes" or "no"'),
             ("category", False, _string, "the split, a string such as adversarial")),
    "scienceqa": (("choices", True, _strings, "the choices, a non-empty list of strings"),
                  ("answer", True, _index, "the 0-based index of the right choice, an integer")),
    "mmvet": (("question", True, _string, "the question, a string"),
              ("answer", True, _string, "the reference answer, a string"),
              ("capability", False, _capability, 'the capabilities, e.g. "ocr,math" or ["ocr", "math"]')),
}


def read_rows(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed JSON)`` of every non-blank line."""
    if not path.is_file():
        raise HfpruneError(f"answers file '{path}' not found; give a JSONL file with one row per sample")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append((line_number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise HfpruneError(f"{path} row {line_number}: not valid JSON ({reason(error)}); "
                                   f"write one JSON object per line") from None
    if not rows:
        raise HfpruneError(f"{path} has no rows; write one JSON object per sample with 'prediction' and the "
                           f"benchmark's reference fields")
    return rows


def to_prediction(spec: BenchmarkSpec, where: str, line: int, row: Any) -> Prediction:
    """One row as a :class:`Prediction`; a malformed row is an error naming its line and field."""
    if not isinstance(row, dict):
        raise HfpruneError(f"{where}: must be a JSON object with 'prediction' and the reference fields")
    checks = (("prediction", True, _string, "the model's raw output, a string"), *ROW_FIELDS[spec.loader])
    for field, required, check, what in checks:
        if row.get(field) is None:
            if required:
                raise HfpruneError(f"{where}: field '{field}' is missing; it must be {what}")
        elif not check(row[field]):
            raise HfpruneError(f"{where}: field '{field}' is {json.dumps(row[field])[:80]}; it must be {what}")
    try:
        references, meta = LOADERS[spec.loader].references(row)
    except ValueError as error:
        raise HfpruneError(f"{where}: {error}") from None
    sample_id = row.get("id", row.get("question_id", line))
    return Prediction(str(sample_id), row["prediction"], references, meta)


def read_answers(spec: BenchmarkSpec, path: Path) -> tuple[list[int], list[Prediction]]:
    """The line numbers and predictions of an answers file's rows."""
    if spec.loader not in ROW_FIELDS or LOADERS[spec.loader].references is None:
        raise HfpruneError(f"benchmark '{spec.name}' uses loader '{spec.loader}', whose rows hfprune score cannot "
                           f"read; it reads the rows of: {', '.join(sorted(ROW_FIELDS))}")
    rows = read_rows(path)
    return [line for line, _ in rows], [to_prediction(spec, f"{path} row {line}", line, row) for line, row in rows]


def score_file(benchmark: str, path: Path, style: Optional[str] = None, judge: Optional[JudgeConfig] = None) -> dict:
    """The scorer's result for an answers file, each per-sample entry with its ``row`` (line number).

    MM-Vet's judge grades are cached in ``judge_cache.jsonl`` beside the file.
    """
    spec = load_spec(benchmark)
    path = Path(path)
    lines, predictions = read_answers(spec, path)
    result = score_predictions(spec, predictions, path.parent, judge=judge, style=style)
    result["per_sample"] = [{"row": line, **entry} for line, entry in zip(lines, result["per_sample"])]
    return {"benchmark": spec.name, **result}


def summary_text(result: dict) -> str:
    metrics = result["metrics"]
    lines = [f"{result['benchmark']} ({result['style']} scoring): {metrics['score']:.2f} "
             f"over {metrics['num_samples']} samples"]
    lines += [f"  {name}: {value:.2f}" if isinstance(value, float) else f"  {name}: {value}"
              for name, value in metrics.items() if name not in ("score", "num_samples")]
    return "\n".join(lines)


def run_score_command(benchmark: str, path: Path, style: Optional[str] = None, as_json: bool = False,
                      per_sample: Optional[Path] = None, judge: Optional[JudgeConfig] = None) -> dict:
    """Score, write ``per_sample`` (one row per input row, in input order) and print the metrics."""
    result = score_file(benchmark, path, style, judge)
    if per_sample is not None:
        per_sample = Path(per_sample)
        per_sample.parent.mkdir(parents=True, exist_ok=True)
        per_sample.write_text("".join(json.dumps(row, default=str) + "\n" for row in result["per_sample"]),
                              encoding="utf-8")
    metrics = result["metrics"]
    if as_json:
        print(json.dumps({"benchmark": result["benchmark"], "style": result["style"], "score": metrics["score"],
                          "metrics": metrics}))
    else:
        print(summary_text(result))
    return result
