"""Magnitude criteria: the L1 or L2 norm of everything a unit owns (its rows and biases, the consumer's columns; a
block's every parameter)."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from hfprune.pruning.structured.criterion import Importance, unit_sums
from hfprune.pruning.structured.groups import Group


@torch.no_grad()
def l1_scores(model: nn.Module, groups: Mapping[str, Group], names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Per unit, the L1 norm of every parameter slice the unit owns."""
    return unit_sums(model, groups, names if names is not None else groups, lambda _, w: w.detach().abs())


@torch.no_grad()
def l2_scores(model: nn.Module, groups: Mapping[str, Group], names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Per unit, the L2 norm of all the parameter slices the unit owns taken together."""
    squares = unit_sums(model, groups, names if names is not None else groups, lambda _, w: w.detach().double() ** 2)
    return {name: total.sqrt() for name, total in squares.items()}


class L1Importance(Importance):
    name = "l1"
    summary = "L1 norm of the unit's weights and biases"

    def scores(self, model, groups, names, *, batches, loss_fn):
        return l1_scores(model, groups, names)


class L2Importance(Importance):
    name = "l2"
    summary = "L2 norm of the unit's weights and biases"

    def scores(self, model, groups, names, *, batches, loss_fn):
        return l2_scores(model, groups, names)
