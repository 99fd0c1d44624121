"""Durable, append-only trial records.

Each finished trial is one JSON line in ``trials.jsonl`` (or ``trials-<shard>.jsonl`` when several
worker processes share a study), written with a single ``write`` and ``fsync``-ed before the trial
counts as done. A process killed mid-write leaves at most one torn last line, which readers skip;
the trial it described is simply run again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from hfprune.io import json_line
from hfprune.study.record import TrialRecord

TRIAL_FILES_GLOB = "trials*.jsonl"


class TrialStore:
    """Appends trial records of one study directory; ``shard`` names this process's file."""

    def __init__(self, directory: str | os.PathLike, shard: str | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        name = "trials.jsonl" if not shard else f"trials-{shard}.jsonl"
        self.path = self.directory / name

    def finished_ids(self) -> set[str]:
        """Ids of every trial recorded by any shard of this study."""
        return {record["trial_id"] for record in read_trials(self.directory)}

    def append(self, record: TrialRecord | dict[str, Any]) -> None:
        """Append one record (a :class:`TrialRecord`, or its JSON form) as one fsync-ed line."""
        record = record.to_json() if isinstance(record, TrialRecord) else record
        if "trial_id" not in record:
            raise ValueError("a trial record needs a 'trial_id'")
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


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn write of a killed process; that trial reruns
            if isinstance(record, dict) and "trial_id" in record:
                yield record


def read_trials(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """All trial records of a study directory, over all shards, first record per id, in file order."""
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(directory).glob(TRIAL_FILES_GLOB)):
        for record in _read_jsonl(path):
            seen.setdefault(record["trial_id"], record)
    return list(seen.values())
