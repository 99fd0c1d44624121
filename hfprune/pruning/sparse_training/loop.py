"""Training a model under fixed masks (pruned weights exactly zero throughout), with the project's trainer."""

from __future__ import annotations

import torch

from hfprune.config.recipe import TrainingSection
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.train.trainer import TrainResult, train


def train_masked(run: SparseRun, masks: dict[str, torch.Tensor], section: TrainingSection | None = None,
                 description: str = "train") -> TrainResult:
    """Train ``run.model`` in place for ``section`` (default ``run.training``) with ``masks`` kept exact."""
    return train(run.model, run.train_set, section or run.training, run.loss_fn, seed=run.seed,
                 masks=MaskedParameters(run.model, masks), progress=run.progress, description=description)
