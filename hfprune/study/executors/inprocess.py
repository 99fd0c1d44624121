"""Trials one after another in this process (and, under ``accelerate launch``, data-parallel over its processes)."""

from __future__ import annotations

from typing import Iterator

from hfprune.study.executors.base import FinishedTrial, TrialContext, torch_threads
from hfprune.study.plan import TrialSpec


class InProcessExecutor:
    """The default: no Ray, nothing to start or stop."""

    def __enter__(self) -> "InProcessExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, context: TrialContext, specs: list[TrialSpec]) -> Iterator[FinishedTrial]:
        for spec in specs:
            with torch_threads(context.recipe.execution.threads_per_trial):
                finished = context.run(spec)
            yield finished
