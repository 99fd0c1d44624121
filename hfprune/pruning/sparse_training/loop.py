"""Training a model under masks (pruned weights exactly zero throughout), with the project's trainer."""

from __future__ import annotations

import math
from typing import Callable

import torch

from hfprune.train.sections import TrainingSection
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.train.trainer import TrainResult, train


def train_masked(run: SparseRun, masks: dict[str, torch.Tensor] | MaskedParameters,
                 section: TrainingSection | None = None, description: str = "train",
                 on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``run.model`` in place for ``section`` (default ``run.training``) with ``masks`` kept exact.

    ``on_step(step)`` runs after every optimizer step; a method that changes its masks during training passes
    a :class:`MaskedParameters` it holds and calls its ``update`` from there.
    """
    masked = masks if isinstance(masks, MaskedParameters) else MaskedParameters(run.model, masks)
    return train(run.model, run.train_set, section or run.training, run.loss_fn, seed=run.seed,
                 masks=masked, progress=run.progress, description=description, on_step=on_step)


def steps_per_epoch(run: SparseRun, section: TrainingSection | None = None) -> int:
    """Optimizer steps in one epoch of ``section`` (default ``run.training``), as the trainer takes them (the
    last, smaller batch included, unless the run drops it)."""
    section = section or run.training
    batches = len(run.train_set) // section.batch_size if run.drop_last else math.ceil(len(run.train_set) /
                                                                                        section.batch_size)
    return math.ceil(batches / section.gradient_accumulation_steps)


def total_steps(run: SparseRun, section: TrainingSection | None = None) -> int:
    """Optimizer steps in a whole training run of ``section`` (default ``run.training``)."""
    return steps_per_epoch(run, section) * (section or run.training).epochs
