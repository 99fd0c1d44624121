"""``hfprune score BENCHMARK FILE``: score answers that any tool produced, with hfprune's scorers.

FILE is JSONL, one row per sample: ``prediction`` (the model's raw output) and the benchmark's
reference fields, named as in its Hub schema (:data:`ROW_FIELDS`); ``id`` or ``question_id`` names
the sample (default: its line number). Rows are numbered by line. The rows become
:class:`Prediction` s through the loader's own reference reader, so ``hfprune score`` and
``hfprune eval --rescore`` score the same answers the same way.

The file must be UTF-8 (a byte-order mark is fine) with rows of at most 16 MiB; anything else (another
encoding, binary data, JSON nested deeper than Python reads, a wrong field) stops with one line naming the row
and field before any scoring. ``--per-sample`` is checked first too: never the answers file or the judge cache,
never a directory; missing folders are made and an earlier output is replaced whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from hfprune.errors import HfpruneError, reason
from hfprune.evaluation.benchmarks.base import Prediction
from hfprune.evaluation.benchmarks.judge import JudgeConfig
from hfprune.evaluation.benchmarks.loaders import LOADERS
from hfprune.evaluation.benchmarks.scorers import JUDGE_CACHE
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


MAX_ROW_BYTES = 16 << 20  # one sample's answer and references; anything longer is not an answers row
UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32's BOMs begin with these too
UTF8_BOM = b"\xef\xbb\xbf"


def _check_answers_path(path: Path) -> None:
    """The answers file exists and is a regular file (a FIFO would block, a directory cannot be read)."""
    if path.is_file():
        return
    kind = "a directory" if path.is_dir() else "not found" if not path.exists() else "not a regular file"
    raise HfpruneError(f"answers file '{path}' is {kind}; give a JSONL file with one row per sample")


def _physical_lines(path: Path) -> Iterator[bytes]:
    """Each newline-terminated line, read ``MAX_ROW_BYTES`` + 1 bytes at most (so a longer one is caught, not
    read whole)."""
    with path.open("rb") as handle:
        yield from iter(lambda: handle.readline(MAX_ROW_BYTES + 1), b"")


def _decode(path: Path, number: int, line: bytes) -> str:
    """One line as text: UTF-8 (a byte-order mark on the first line is fine), else an error naming the row."""
    if number == 1:
        if line.startswith(UTF16_32_BOMS):
            raise HfpruneError(f"{path} is UTF-16 or UTF-32 text; save it as UTF-8, one JSON object per line")
        line = line.removeprefix(UTF8_BOM)
    if b"\x00" in line:
        raise HfpruneError(f"{path} row {number}: holds NUL bytes, so it is not UTF-8 JSON text (a binary or UTF-16 "
                           f"file?); save the answers as UTF-8, one JSON object per line")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HfpruneError(f"{path} row {number}: not UTF-8 text (byte 0x{line[error.start]:02x} at column "
                           f"{error.start + 1}); save the answers file as UTF-8") from None


def _rows_of(text: str) -> list[str]:
    """A line split at lone carriage returns, as text mode's universal newlines split it."""
    return re.split(r"\r(?!\n)", text) if "\r" in text else [text]


def _parse(path: Path, number: int, text: str) -> Any:
    """One row's JSON; invalid, too deeply nested or unreadable JSON is an error naming the row."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise HfpruneError(f"{path} row {number}: not valid JSON ({reason(error)}); "
                           f"write one JSON object per line") from None
    except RecursionError:
        raise HfpruneError(f"{path} row {number}: nested deeper than Python can read; a row is one flat JSON "
                           f"object") from None
    except ValueError as error:  # e.g. an integer longer than Python converts
        raise HfpruneError(f"{path} row {number}: unreadable JSON ({reason(error)}); fix that row") from None


def read_rows(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed JSON)`` of every non-blank line; unreadable bytes or JSON are an error naming the
    row."""
    _check_answers_path(path)
    rows = []
    number = 0
    for line in _physical_lines(path):
        if len(line) > MAX_ROW_BYTES:
            raise HfpruneError(f"{path} row {number + 1} is longer than {MAX_ROW_BYTES >> 20} MiB; an answers file "
                               f"holds one JSON object per line (is this the right file?)")
        for text in _rows_of(_decode(path, number + 1, line)):
            number += 1
            if text.strip():
                rows.append((number, _parse(path, number, text)))
    if not rows:
        raise HfpruneError(f"{path} has no rows; write one JSON object per sample with 'prediction' and the "
                           f"benchmark's reference fields")
    return rows


def _shown(value: Any) -> str:
    """A field's value as the user wrote it, cut to 80 characters (its type where JSON cannot show it)."""
    try:
        return json.dumps(value)[:80]
    except (RecursionError, ValueError):
        return f"a deeply nested {type(value).__name__}"


def _sample_id(where: str, row: dict, line: int) -> str:
    """``id``, else ``question_id``, else the line number; an id must be a string or a number."""
    for field in ("id", "question_id"):
        value = row.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise HfpruneError(f"{where}: field '{field}' is {_shown(value)}; it must name the sample, a string "
                               f"or a number")
        return str(value)
    return str(line)


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
            raise HfpruneError(f"{where}: field '{field}' is {_shown(row[field])}; it must be {what}")
    sample_id = _sample_id(where, row, line)
    try:
        references, meta = LOADERS[spec.loader].references(row)
    except ValueError as error:
        raise HfpruneError(f"{where}: {error}") from None
    return Prediction(sample_id, row["prediction"], references, meta)


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


def check_per_sample(per_sample: Path, answers: Path) -> None:
    """Refuse, before any scoring, a ``--per-sample`` path that cannot be written or would replace an input."""
    flag = f"--per-sample {per_sample}"
    if per_sample.is_dir():
        raise HfpruneError(f"{flag} is a directory; give a file path, e.g. {per_sample / 'per_sample.jsonl'}")
    if per_sample.exists():
        if not per_sample.is_file():
            raise HfpruneError(f"{flag} is not a regular file; give the path of a new or regular file")
        if answers.is_file() and per_sample.samefile(answers):
            raise HfpruneError(f"{flag} is the answers file itself and would replace it; choose another file")
        if per_sample.resolve() == (answers.parent / JUDGE_CACHE).resolve():
            raise HfpruneError(f"{flag} is the judge's grade cache beside the answers; choose another file")
    folder = per_sample.parent
    while not folder.exists() and folder != folder.parent:  # the nearest folder that exists: made below it
        folder = folder.parent
    if not folder.is_dir():
        raise HfpruneError(f"{flag}: '{folder}' is a file, not a folder; choose a path inside a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HfpruneError(f"{flag}: the folder '{folder}' is not writable; choose a writable folder")


def write_per_sample(per_sample: Path, rows: list[dict]) -> None:
    """One JSON line per row, written whole (a partial file renamed over the target) or not at all."""
    partial = per_sample.with_name(per_sample.name + ".partial")
    try:
        per_sample.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows), encoding="utf-8")
        partial.replace(per_sample)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise HfpruneError(f"--per-sample {per_sample}: cannot write it ({reason(error, kind=True)}); choose "
                           f"another path") from None


def run_score_command(benchmark: str, path: Path, style: Optional[str] = None, as_json: bool = False,
                      per_sample: Optional[Path] = None, judge: Optional[JudgeConfig] = None) -> dict:
    """Score, write ``per_sample`` (one row per input row, in input order) and print the metrics."""
    if per_sample is not None:
        per_sample = Path(per_sample)
        check_per_sample(per_sample, Path(path))
    result = score_file(benchmark, path, style, judge)
    if per_sample is not None:
        write_per_sample(per_sample, result["per_sample"])
    metrics = result["metrics"]
    if as_json:
        print(json.dumps({"benchmark": result["benchmark"], "style": result["style"], "score": metrics["score"],
                          "metrics": metrics}))
    else:
        print(summary_text(result))
    return result
