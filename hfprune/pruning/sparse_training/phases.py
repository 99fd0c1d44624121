"""A sparse-training method as training phases: it hands back what to train (a model, its masks, what runs after
every step) and whoever trains it decides how — one model alone (:func:`run_phases`) or many models as one pack
(:func:`run_phase_packs`, the packed engine of :mod:`hfprune.train.packed`).

A method is a generator (:data:`Phases`): it yields a :class:`TrainPhase`, receives that phase's
:class:`~hfprune.train.trainer.TrainResult`, may change the model between phases (IMP rewinds it, magnitude pruning
prunes it) and yields the next; its return value is its :class:`~hfprune.pruning.sparse_training.base.SparseResult`.
A pack drives several generators in lockstep: their current phases of one shape train together, so IMP packs
round by round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator

import torch
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.masking import MaskedParameters
from hfprune.train.packed import PackedJob, pack_key, train_packed
from hfprune.train.packed.jobs import unsupported
from hfprune.train.sections import TrainingSection
from hfprune.train.trainer import LossFn, TrainResult, train


@dataclass(eq=False)
class TrainPhase:
    """One training run: ``train(model, train_set, section, loss_fn, seed=seed, masks=masks, on_step=on_step)``.

    ``on_step(step)`` may read :attr:`step_model` and :attr:`step_batch`, the model the step's loss saw and the
    step's batch (RigL's dense gradient). Beyond what ``train()`` does: ``drop_last`` drops each epoch's last,
    smaller batch; ``skip_update(step)`` says a step's optimizer update (weights and momentum) is skipped;
    ``reset_momentum`` zeroes the momentum of pruned weights after every step (SGD). A phase that asks for any of
    these trains through the packed engine, alone as a pack of one if need be.
    """

    model: nn.Module
    train_set: Any
    loss_fn: LossFn
    section: TrainingSection
    seed: int
    masks: MaskedParameters | None = None
    on_step: Callable[[int], None] | None = None
    description: str = "train"
    drop_last: bool = False
    skip_update: Callable[[int], bool] | None = None
    reset_momentum: bool = False
    progress: bool = False
    step_model: nn.Module | None = None
    step_batch: dict | None = None

    @property
    def needs_engine(self) -> bool:
        """Whether only the packed engine trains this phase (what it asks for is not ``train()``'s)."""
        return self.drop_last or self.skip_update is not None or self.reset_momentum

    def key(self) -> str:
        """Phases with one key may train in one pack (same shapes, shared settings, data and loss)."""
        return "|".join((pack_key(self.model, self.section), str(self.drop_last), str(id(self.train_set)),
                         f"{getattr(self.loss_fn, '__module__', '')}.{getattr(self.loss_fn, '__qualname__', '')}"))


Phases = Generator[TrainPhase, TrainResult, Any]


def _job(phase: TrainPhase) -> PackedJob:
    job = PackedJob(phase.model, phase.section, phase.seed, phase.masks, skip_update=phase.skip_update,
                    reset_momentum=phase.reset_momentum)
    if phase.on_step is not None:
        def on_step(step: int) -> None:
            phase.step_model, phase.step_batch = job.model, job.batch
            try:
                phase.on_step(step)
            finally:
                phase.step_model = phase.step_batch = None

        job.on_step = on_step
    return job


def _check_engine(phase: TrainPhase) -> None:
    problem = unsupported(phase.section)
    if problem:
        raise HfpruneError(f"{phase.description}: drop_last, skipped updates and momentum resets train through the "
                           f"packed engine, which does not do {problem}; drop them or that training setting")


def train_phase(phase: TrainPhase) -> TrainResult:
    """Train one phase alone: with ``train()``, or as a pack of one where it asks for what only the packed engine
    does."""
    if phase.needs_engine:
        _check_engine(phase)
        return train_packed([_job(phase)], phase.train_set, phase.loss_fn, drop_last=phase.drop_last,
                            progress=phase.progress, description=phase.description)[0]
    loss_fn = phase.loss_fn
    if phase.on_step is not None:
        def loss_fn(model: nn.Module, batch: dict) -> torch.Tensor:
            phase.step_model, phase.step_batch = model, batch
            return phase.loss_fn(model, batch)
    return train(phase.model, phase.train_set, phase.section, loss_fn, seed=phase.seed, masks=phase.masks,
                 progress=phase.progress, description=phase.description, on_step=phase.on_step)


def run_phases(phases: Phases) -> Any:
    """Drive one method's (or trial's) phases alone; return what the generator returns."""
    try:
        phase = next(phases)
        while True:
            phase = phases.send(train_phase(phase))
    except StopIteration as stop:
        return stop.value


def _train_group(group: list[TrainPhase], device: torch.device | str | None) -> list[TrainResult]:
    """Train phases of one key: as one pack where the packed engine trains them, else one by one."""
    first = group[0]
    if len(group) == 1 and not first.needs_engine or unsupported(first.section):
        return [train_phase(phase) for phase in group]
    return train_packed([_job(phase) for phase in group], first.train_set, first.loss_fn, device=device,
                        drop_last=first.drop_last, progress=False, description=f"pack of {len(group)}")


def run_phase_packs(generators: list[Phases], device: torch.device | str | None = None) -> list[Any]:
    """Drive several generators in lockstep: at each round their current phases are grouped by
    :meth:`TrainPhase.key` and each group trains as one pack; each generator gets its own result back. Returns
    what each generator returns, in order. Each model ends as it would alone (the packed engine's promise)."""
    results: list[Any] = [None] * len(generators)
    current: dict[int, TrainPhase] = {}

    def advance(index: int, sent: TrainResult | None) -> None:
        try:
            current[index] = generators[index].send(sent) if sent is not None else next(generators[index])
        except StopIteration as stop:
            current.pop(index, None)
            results[index] = stop.value

    for index in range(len(generators)):
        advance(index, None)
    while current:
        groups: dict[str, list[int]] = {}
        for index, phase in current.items():
            groups.setdefault(phase.key(), []).append(index)
        for indices in groups.values():
            trained = _train_group([current[index] for index in indices], device)
            for index, result in zip(indices, trained):
                advance(index, result)
    return results
