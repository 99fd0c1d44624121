"""Trials one after another in this process (and, under ``accelerate launch``, data-parallel over its processes)."""

from __future__ import annotations

from typing import Iterator

from hfprune.study.executors.base import FinishedTrial, TrialRunner, torch_threads
from hfprune.study.spec import TrialSpec


class InProcessExecutor:
    """The default: no Ray, nothing to start or stop."""

    def __enter__(self) -> "InProcessExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __init__(self, threads: int = 1):
        self.threads = threads  # torch threads of a trial: the same as on Ray, so records do not depend on where

    def run(self, runner: TrialRunner, specs: list[TrialSpec]) -> Iterator[FinishedTrial]:
        for spec in specs:
            with torch_threads(self.threads):
                finished = runner.run(spec)
            yield finished
