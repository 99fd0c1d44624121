"""What every executor shares: the study's context of a trial, and what a finished trial hands the driver."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import torch
from accelerate import PartialState
from transformers import PreTrainedModel

from hfprune.config.recipe import Recipe
from hfprune.study.physical import retraining_shrink
from hfprune.study.plan import Plan, TrialSpec
from hfprune.study.record import TrialRecord
from hfprune.study.tasks import Task
from hfprune.study.trial import run_trial


@dataclass
class FinishedTrial:
    """A trial's record and the model the driver exports (physically pruned where the family can shrink;
    None when the recipe exports no checkpoints, and on the processes of a launch other than the main one)."""

    spec: TrialSpec
    record: TrialRecord
    checkpoint: PreTrainedModel | None


@dataclass
class TrialContext:
    """Everything a trial needs besides its spec: built once per study, shared by all its trials (on Ray: put
    in the object store once, fetched once per worker process)."""

    recipe: Recipe
    dense: PreTrainedModel
    task: Task
    plan: Plan
    directory: Path
    progress: bool = False  # per-epoch bars inside the trial

    def run(self, spec: TrialSpec, progress: bool | None = None) -> FinishedTrial:
        """Run one trial (see :func:`hfprune.study.trial.run_trial`) and make the model its export saves."""
        record, model = run_trial(spec, self.dense, self.plan.masks, self.task, self.recipe.retrain,
                                  self.recipe.seed, self.progress if progress is None else progress,
                                  workdir=self.directory / "trials" / spec.directory_name,
                                  shrink=retraining_shrink(self.plan, spec, self.recipe.retrain),
                                  rounds=getattr(self.plan, "run_rounds", None))
        exports = self.recipe.export.checkpoints != "none" and PartialState().is_main_process
        return FinishedTrial(spec, record, self.plan.exported(spec, model) if exports else None)


class Executor(Protocol):
    """Runs trials somewhere and yields each as it finishes, in any order; the driver alone records them."""

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...

    def run(self, context: TrialContext, specs: list[TrialSpec]) -> Iterator[FinishedTrial]:
        """Run ``specs`` and yield each finished trial."""


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` intra-op torch threads (None: leave them as they are)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
