"""The validation split that mask selection ranks by: a seeded share of the train split, never the test split."""

from __future__ import annotations

import dataclasses

import torch

from hfprune.data import ImageClassificationData, TensorImageSet
from hfprune.errors import HfpruneError


def validation_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of round(fraction · n) train rows (at least one, at most n − 1), drawn with ``seed``."""
    if n < 2:
        raise HfpruneError(f"the train split has {n} row(s): holding a validation split out needs at least 2 (one to "
                           "train on, one to rank by); use more training data")
    size = min(n - 1, max(1, round(fraction * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:size].sort().values


def hold_out(data: ImageClassificationData, fraction: float, seed: int) -> tuple[ImageClassificationData,
                                                                              TensorImageSet]:
    """``data`` with its train split minus the held-out rows, and those rows as the validation set."""
    n = len(data.train)
    held = validation_indices(n, fraction, seed)
    kept = torch.ones(n, dtype=torch.bool)
    kept[held] = False
    train = TensorImageSet(data.train.images[kept], data.train.labels[kept])
    validation = TensorImageSet(data.train.images[held], data.train.labels[held])
    return dataclasses.replace(data, train=train), validation
