"""What every executor shares: what runs a trial, and what a finished trial hands the driver."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import torch
from transformers import PreTrainedModel

from hfprune.records.record import TrialRecord
from hfprune.study.spec import TrialSpec


@dataclass
class FinishedTrial:
    """A trial's record and the model the driver exports (physically pruned where the family can shrink;
    None when the recipe exports no checkpoints, and on the processes of a launch other than the main one)."""

    spec: TrialSpec
    record: TrialRecord
    checkpoint: PreTrainedModel | None


class TrialRunner(Protocol):
    """What runs one trial of a study: built once per study, shared by all its trials (on Ray: put in the object
    store once, fetched once per worker process).

    A runner that packs also has ``pack_key(spec) -> str | None`` (trials with one key may train as one pack;
    None: alone), ``run_pack(specs, progress=None) -> list[FinishedTrial]`` (each record equal to the trial's
    alone, within the packed engine's tolerance) and ``calibrate(spec) -> int`` (the pack size that trains the
    most trials per second on this device)."""

    def run(self, spec: TrialSpec, progress: bool | None = None) -> FinishedTrial:
        """Run one trial; ``progress`` overrides the runner's own per-epoch bars (Ray workers: off)."""


class Executor(Protocol):
    """Runs trials somewhere and yields each as it finishes, in any order; the driver alone records them."""

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...

    def run(self, runner: TrialRunner, specs: Iterable[TrialSpec]) -> Iterator[FinishedTrial]:
        """Run ``specs`` with ``runner`` and yield each finished trial."""


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
