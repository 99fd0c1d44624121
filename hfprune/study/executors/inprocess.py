"""Trials one after another in this process (and, under ``accelerate launch``, data-parallel over its processes);
trials of one shape as packs where the recipe asks for them (``execution.pack``)."""

from __future__ import annotations

from typing import Iterable, Iterator

from hfprune.study.executors.base import FinishedTrial, TrialRunner, torch_threads
from hfprune.study.executors.packing import packs, run_group
from hfprune.study.spec import TrialSpec


class InProcessExecutor:
    """The default: no Ray, nothing to start or stop."""

    def __enter__(self) -> "InProcessExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __init__(self, threads: int = 1, pack: int | str = 1):
        self.threads = threads  # torch threads of a trial: the same as on Ray, so records do not depend on where
        self.pack = pack  # trials per pack, or auto

    def _calibrate(self, runner: TrialRunner, spec: TrialSpec) -> int:
        with torch_threads(self.threads):
            return runner.calibrate(spec)

    def run(self, runner: TrialRunner, specs: Iterable[TrialSpec]) -> Iterator[FinishedTrial]:
        for group in packs(runner, specs, self.pack, lambda spec: self._calibrate(runner, spec)):
            with torch_threads(self.threads):
                finished = run_group(runner, group)
            yield from finished
