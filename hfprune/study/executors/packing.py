"""Which trials train together: a stage's pending trials grouped by their runner's pack key and cut into packs.

A runner that can pack (``pack_key``, ``run_pack``; the sparse kind's) says which trials share a shape and settings
(:func:`hfprune.train.packed.pack_key`); trials without a key run alone. ``pack`` is a size or ``auto``: the
runner's short measured calibration on the device picks the size per key (1 where one at a time is faster).
Trials stream through: a huge lazy stage is never listed, only each key's pack in the making is held.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from hfprune.study.executors.base import TrialRunner
from hfprune.study.spec import TrialSpec


def can_pack(runner: TrialRunner) -> bool:
    """Whether ``runner`` trains several trials as one pack."""
    return all(hasattr(runner, name) for name in ("pack_key", "run_pack"))


def packs(runner: TrialRunner, specs: Iterable[TrialSpec], size: int | str,
          calibrate: Callable[[TrialSpec], int] | None = None) -> Iterator[list[TrialSpec]]:
    """``specs`` in packs of up to ``size`` trials of one pack key (``auto``: ``calibrate(first trial of the
    key)``), in the order each pack fills; trials without a key, or when nothing packs, one by one."""
    if size == 1 or not can_pack(runner):
        for spec in specs:
            yield [spec]
        return
    waiting: dict[str, list[TrialSpec]] = {}
    sizes: dict[str, int] = {}
    for spec in specs:
        key = runner.pack_key(spec)
        if key is None:
            yield [spec]
            continue
        if key not in sizes:
            sizes[key] = max(1, calibrate(spec) if size == "auto" and calibrate is not None else
                             (1 if size == "auto" else int(size)))
        group = waiting.setdefault(key, [])
        group.append(spec)
        if len(group) >= sizes[key]:
            yield group
            waiting[key] = []
    for group in waiting.values():
        if group:
            yield group


def run_group(runner: TrialRunner, group: list[TrialSpec], progress: bool | None = None) -> list:
    """One pack's finished trials (a pack of one through the runner's ``run``)."""
    if len(group) == 1:
        return [runner.run(group[0]) if progress is None else runner.run(group[0], progress=progress)]
    return runner.run_pack(group) if progress is None else runner.run_pack(group, progress=progress)
