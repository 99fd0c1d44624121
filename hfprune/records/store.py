"""Durable, append-only trial records.

Each finished trial is one JSON line in ``trials.jsonl`` (or ``trials-<shard>.jsonl`` when several
worker processes share a study), written with a single ``write`` and ``fsync``-ed before the trial
counts as done. A process killed mid-write leaves at most one torn last line, which readers skip;
the trial it described is simply run again. Every record carries its recipe's fingerprint, so records
of another recipe, or a second record of one trial, are refused rather than taken in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from hfprune.errors import HfpruneError
from hfprune.io import json_line
from hfprune.records.record import TrialRecord

TRIAL_FILES_GLOB = "trials*.jsonl"


FINGERPRINT = "recipe_fingerprint"  # each record names the recipe it was measured under


class TrialStore:
    """Appends trial records of one study directory; ``shard`` names this process's file.

    ``fingerprint`` (the recipe's) is stamped on every appended record, and :meth:`finished_ids` refuses
    records stamped with another.
    """

    def __init__(self, directory: str | os.PathLike, shard: str | None = None, fingerprint: str | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        name = "trials.jsonl" if not shard else f"trials-{shard}.jsonl"
        self.path = self.directory / name
        self.fingerprint = fingerprint

    def finished_ids(self) -> set[str]:
        """Ids of every trial recorded by any shard of this study."""
        return {record["trial_id"] for record in read_trials(self.directory, self.fingerprint)}

    def append(self, record: TrialRecord | dict[str, Any]) -> None:
        """Append one record (a :class:`TrialRecord`, or its JSON form) as one fsync-ed line."""
        record = record.to_json() if isinstance(record, TrialRecord) else record
        if "trial_id" not in record:
            raise ValueError("a trial record needs a 'trial_id'")
        if self.fingerprint is not None:
            record = {**record, FINGERPRINT: self.fingerprint}
        line = json_line(record, sort_keys=True)
        # A torn line left by a killed writer must not swallow this record.
        prefix = ""
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    prefix = "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(prefix + line)
            handle.flush()
            os.fsync(handle.fileno())


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, record) of every record line; torn or corrupt lines (not UTF-8, not JSON) are skipped:
    hfprune writes whole ASCII lines, so such a line is a killed writer's, and its trial runs again."""
    if not path.is_file():
        raise HfpruneError(f"{path} is not a regular file; a study's trial records are files (move it away)")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8").strip()
                record = json.loads(line) if line else None
            except (UnicodeDecodeError, ValueError, RecursionError):
                continue
            if isinstance(record, dict) and isinstance(record.get("trial_id"), str):
                yield number, record


def read_trials(directory: str | os.PathLike, fingerprint: str | None = None) -> list[dict[str, Any]]:
    """All trial records of a study directory, over all shards, in file order.

    A second record of one trial id, or records of two recipes (another ``fingerprint`` than the one given,
    else than the first record's), are refused with an HfpruneError naming the file and line.
    """
    return read_records(sorted(Path(directory).glob(TRIAL_FILES_GLOB)), fingerprint)


def read_records(paths: Iterable[Path], fingerprint: str | None = None) -> list[dict[str, Any]]:
    """The records of JSON-lines files of one study (see :func:`read_trials`: the same refusals)."""
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    expected = fingerprint
    for path in paths:
        for number, record in _read_jsonl(path):
            where = f"{path.name} line {number}"
            stamp = record.get(FINGERPRINT)
            if stamp is not None:
                expected = expected or stamp
                if stamp != expected:
                    raise HfpruneError(
                        f"{path}, line {number}: a record of another recipe (fingerprint {stamp}, this study "
                        f"{expected}); move that line out of the file, or run this recipe with another --out")
            if record["trial_id"] in seen:
                raise HfpruneError(
                    f"{path}, line {number}: a second record of trial '{record['trial_id']}' (the first is "
                    f"{seen[record['trial_id']][0]}); hfprune records a trial once: remove one of the two lines")
            seen[record["trial_id"]] = (where, record)
    return [record for _, record in seen.values()]
