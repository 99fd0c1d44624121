"""What every sparse-training method shares: the run it is given, what it hands back, and its base class.

A method is one pydantic class that owns its options (like the unstructured methods); it trains the run's
model in place and ends with exactly ``budget`` nonzero weights over the run's prunable weights, pruned weights
exactly zero. Biases are never pruned and never counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from hfprune.train.sections import TrainingSection
from hfprune.config.schema import Section

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

    @property
    def total_weights(self) -> int:
        return sum(weight.numel() for weight in self.weights.values())


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

    def run(self, run: SparseRun, budget: int) -> SparseResult:
        """Train ``run.model`` in place to ``budget`` nonzero weights over ``run.weights``."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name"})

    @property
    def label(self) -> str:
        return self.name
