"""What every sparse-training method shares: the run it is given, what it hands back, and its base class.

A method is one pydantic class that owns its options (like the unstructured methods). It does not train the
model itself: :meth:`SparseTrainingMethod.phases` hands back each training run it needs (masks kept exact, what
runs after every step; :mod:`.phases`), so the model trains alone or packed with others; :meth:`run` trains it
alone. It ends with exactly ``budget`` nonzero weights over the run's prunable weights, pruned weights exactly zero.
Biases are never pruned and never counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from hfprune.config.schema import Section
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.sparse_training.phases import Phases, TrainPhase, run_phases
from hfprune.train.sections import TrainingSection

LossFn = Callable[[nn.Module, dict], torch.Tensor]


@dataclass
class SparseRun:
    """One model to make sparse and train: everything a method needs besides its budget."""

    model: nn.Module  # trained in place
    weights: dict[str, nn.Parameter]  # the prunable weight matrices by parameter name, input side first
    train_set: torch.utils.data.Dataset  # batches {"inputs": float [B, d], "labels": float [B]}
    training: TrainingSection  # how one training run goes (the paper: SGD m0.9 wd5e-4, batch 128, 50 epochs)
    loss_fn: LossFn  # loss_fn(model, batch) -> scalar
    seed: int
    progress: bool = False
    drop_last: bool = False  # leave each epoch's last, smaller batch out (the reference's loader)

    @property
    def total_weights(self) -> int:
        return sum(weight.numel() for weight in self.weights.values())

    def phase(self, masks: dict[str, torch.Tensor] | MaskedParameters | None, *, section: TrainingSection | None = None,
              seed: int | None = None, description: str = "train", **options: Any) -> TrainPhase:
        """A training phase of this run's model under ``masks`` (a dict, or a :class:`MaskedParameters` the method
        keeps and updates), with ``section`` (default :attr:`training`) and data-order ``seed`` (default
        :attr:`seed`); ``options``: ``on_step``, ``skip_update``, ``reset_momentum``."""
        if masks is not None and not isinstance(masks, MaskedParameters):
            masks = MaskedParameters(self.model, masks)
        return TrainPhase(self.model, self.train_set, self.loss_fn, section or self.training,
                          self.seed if seed is None else seed, masks, description=description,
                          drop_last=self.drop_last, progress=self.progress, **options)


@dataclass
class SparseResult:
    """The masks a method ended with (True = kept; exactly the budget in all) and what it spent."""

    masks: dict[str, torch.Tensor]
    epochs: int  # training epochs spent in all (IMP: every round)
    facts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds, by stage (the same run twice differs here)

    @property
    def nonzeros(self) -> int:
        return sum(int(mask.sum()) for mask in self.masks.values())


class SparseTrainingMethod(Section):
    """Base of the registered sparse-training methods (see :mod:`hfprune.pruning.sparse_training.registry`)."""

    name: str
    at_initialisation: ClassVar[bool] = False  # prunes before any training (SNIP, GraSP, SynFlow, ...)
    # nonzero weights the reference code ends with below the budget it is asked for (its strict thresholds)
    reference_shortfall: ClassVar[int] = 0
    packs: ClassVar[str] = "yes: one training run under a fixed mask"  # how its trials pack (``hfprune methods``)

    def phases(self, run: SparseRun, budget: int) -> Phases:
        """Hand back, one by one, the training phases that take ``run.model`` to ``budget`` nonzero weights over
        ``run.weights``; return the :class:`SparseResult` (see :mod:`.phases`)."""
        raise NotImplementedError

    def phase_count(self, run_training: TrainingSection) -> int:
        """How many training phases :meth:`phases` hands back (trials with as many pack together)."""
        return 1

    def run(self, run: SparseRun, budget: int) -> SparseResult:
        """Train ``run.model`` in place, alone, to ``budget`` nonzero weights over ``run.weights``."""
        return run_phases(self.phases(run, budget))

    def options(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name"})

    @property
    def label(self) -> str:
        return self.name
