"""Tables of trials: a study directory, or a CSV / JSONL / JSON file, as flat rows of columns."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from hfprune.errors import HfpruneError
from hfprune.io import read_json
from hfprune.records.store import TRIAL_FILES_GLOB, read_trials

MISSING_TEXT = frozenset({"", "nan", "null", "none", "na", "n/a"})
ALL_SETTINGS = "all"
NOT_INTEGER_CHARS = frozenset(".eEiInN")  # a decimal point, an exponent, inf or nan: int() would fail


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted columns: ``{"timings": {"retrain_s": 1}}`` → ``{"timings.retrain_s": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _coerce(text: str) -> Any:
    """A CSV cell as int, float, None (empty / NaN / null) or the text itself."""
    stripped = text.strip()
    if stripped.lower() in MISSING_TEXT:
        return None
    try:
        number = float(stripped)
    except ValueError:
        return text  # int() reads no text that float() cannot
    if not NOT_INTEGER_CHARS.isdisjoint(stripped):
        return number
    try:
        return int(stripped)
    except ValueError:
        return number


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise HfpruneError(f"{path} is not UTF-8 text (byte {error.start}); save the table as UTF-8") from None


def _read_csv(path: Path) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    try:
        return [{key: _coerce(value or "") for key, value in row.items() if key is not None} for row in reader]
    except csv.Error as error:
        raise HfpruneError(f"{path}: not a readable CSV table after line {reader.line_num} ({error})") from None


def _read_jsonl(path: Path) -> list[Any]:
    lines = _read_text(path).splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines[:last + 1]):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except RecursionError:
            raise HfpruneError(f"{path}, line {i + 1}: nested deeper than Python can read") from None
        except json.JSONDecodeError as error:
            if i == last:
                break  # torn last line of a killed writer
            raise HfpruneError(f"{path}, line {i + 1}: not valid JSON ({error.msg}); fix or remove that line") from None
    return records


def _read_records(path: Path) -> list[Any]:
    if path.is_dir():
        if not any(path.glob(TRIAL_FILES_GLOB)):
            raise HfpruneError(f"no trial records ({TRIAL_FILES_GLOB}) in {path}; run the study first "
                               "or give a CSV/JSONL/JSON table")
        return read_trials(path)
    if not path.is_file():  # a FIFO or a device would block or never end
        raise HfpruneError(f"'{path}' is not a regular file; give a study directory or a .csv, .jsonl or .json table")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        records = read_json(path, "table")
        if not isinstance(records, list):
            raise HfpruneError(f"{path} must hold a JSON list of objects, one per trial")
        return records
    raise HfpruneError(f"cannot read '{path}': give a study directory or a .csv, .jsonl or .json table")


def load_table(path: str | Path) -> list[dict[str, Any]]:
    """Flat rows of a study directory (all ``trials*.jsonl`` shards) or of a CSV / JSONL / JSON table."""
    path = Path(path)
    if not path.exists():
        raise HfpruneError(f"'{path}' does not exist; give a study directory or a .csv, .jsonl or .json table")
    records = _read_records(path)
    if not records:
        raise HfpruneError(f"{path} holds no trials")
    bad = next((i for i, record in enumerate(records, start=1) if not isinstance(record, dict)), None)
    if bad is not None:
        raise HfpruneError(f"{path}: record {bad} is not an object; every trial must be a JSON object")
    return [flatten(record) for record in records]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _column_kinds(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each column as "number" (numbers and nulls), "null" (nulls only) or "text", in first-seen order."""
    kinds: dict[str, str] = {}
    for row in rows:
        for key, value in row.items():
            if value is None:
                kinds.setdefault(key, "null")
            elif not _is_number(value):
                kinds[key] = "text"
            elif kinds.get(key) != "text":
                kinds[key] = "number"
    return kinds


def numeric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Columns with at least one number and nothing but numbers or nulls."""
    return [key for key, kind in _column_kinds(rows).items() if kind == "number"]


def require_columns(rows: list[dict[str, Any]], names: Iterable[str], source: str) -> None:
    """Raise the ``column_values`` error for the first of ``names`` that is not a numeric column."""
    for name in names:
        column_values(rows, name, source)


def _column_kind(rows: list[dict[str, Any]], name: str) -> str | None:
    """Column ``name`` as ``_column_kinds`` sees it (None: no row has it), reading that column only."""
    values = [row[name] for row in rows if name in row]
    if not values:
        return None
    if any(value is not None and not _is_number(value) for value in values):
        return "text"
    return "number" if any(value is not None for value in values) else "null"


def column_values(rows: list[dict[str, Any]], name: str, source: str) -> np.ndarray:
    """Column ``name`` as floats, NaN where a row lacks a finite value; a clear error for bad columns."""
    kind = _column_kind(rows, name)
    if kind != "number":
        problem = {None: "does not exist", "null": "has no values", "text": "is not numeric"}[kind]
        available = ", ".join(numeric_columns(rows)) or "none"
        raise HfpruneError(f"column '{name}' {problem} in {source}; numeric columns: {available}")
    values = np.array([row[name] if _is_number(row.get(name)) else math.nan for row in rows], dtype=float)
    values[~np.isfinite(values)] = math.nan
    return values


@dataclass
class Points:
    """The finite (x, y) points of one setting; repeats of a mask averaged into one point."""

    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    n_trials: int  # rows with both values
    n_dropped: int  # rows missing x or y


def _group_means(values: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """``values[members].mean()`` of each group, computed for all groups of one size at once (same result)."""
    means = np.empty(len(groups))
    by_size: dict[int, list[int]] = {}
    for g, members in enumerate(groups):
        by_size.setdefault(len(members), []).append(g)
    for size, same_size in by_size.items():
        members = np.array([groups[g][0] for g in same_size] if size == 1 else [groups[g] for g in same_size])
        means[same_size] = values[members] if size == 1 else values[members].mean(axis=1)
    return means


def _mean_by_mask(rows: list[dict[str, Any]], kept: list[int], xs: np.ndarray, ys: np.ndarray,
                  average_repeats: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One point per (setting, mask_id) with x and y averaged over its repeats, sorted by id.

    A point's id is its trial id when it stands for one trial, else ``<setting>:<mask_id>``.
    """
    groups: dict[Any, list[int]] = {}
    for i in kept:
        mask_id = rows[i].get("mask_id") if average_repeats else None
        key = f"{setting_of(rows[i])}:{mask_id}" if mask_id is not None else i
        groups.setdefault(key, []).append(i)
    members = list(groups.values())
    ids = [str(rows[m[0]].get("trial_id", key) if len(m) == 1 else key) for key, m in groups.items()]
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return _group_means(xs, members)[order], _group_means(ys, members)[order], [ids[i] for i in order]


def setting_of(row: dict[str, Any]) -> str:
    """The row's pruning setting (e.g. ``conv1@0.5``), or ``"all"`` for a table without settings."""
    setting = row.get("setting")
    return ALL_SETTINGS if setting is None else str(setting)


def pair_points(rows: list[dict[str, Any]], x: str, y: str, source: str, by_setting: bool = True,
                average_repeats: bool = True) -> dict[str, Points]:
    """Points of the pair (x, y) per setting (sorted by name), or all rows as one ``"all"`` group.

    Rows where x or y is missing are dropped and counted. With ``average_repeats``, the repeats of
    one mask (rows sharing ``setting`` and ``mask_id``) become one point with their mean x and y,
    as in the paper, so that the oracle is a mask rather than its luckiest retraining seed.
    """
    xs, ys = column_values(rows, x, source), column_values(rows, y, source)
    both = (np.isfinite(xs) & np.isfinite(ys)).tolist()
    settings: dict[str, list[int]] = {ALL_SETTINGS: list(range(len(rows)))} if not by_setting else {}
    for i, row in enumerate(rows if by_setting else ()):
        settings.setdefault(setting_of(row), []).append(i)
    result = {}
    for setting in sorted(settings):
        members = settings[setting]
        kept = [i for i in members if both[i]]
        px, py, ids = _mean_by_mask(rows, kept, xs, ys, average_repeats)
        result[setting] = Points(px, py, ids, n_trials=len(kept), n_dropped=len(members) - len(kept))
    return result
