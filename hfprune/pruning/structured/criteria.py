"""Mask criteria besides the pruned train loss (paper App. B.1): what the units a mask removes were worth.

A criterion of a structured mask is the sum, over the units it removes, of a per-unit score of the dense model:
``pruned_taylor_fo`` sums the Taylor-FO scores (:func:`~hfprune.pruning.structured.importance.taylor_fo_scores`,
Σ|∂L/∂gate| over calibration batches). Unit scores depend only on the dense model, so a study computes them once
and every trial adds up its removed units. Lower is better (removing less important units).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from hfprune.pruning.structured.groups import Group, StructuredMask
from hfprune.pruning.structured.importance import taylor_fo_scores

CRITERIA = "criteria"  # key of the mask facts that carries criterion values (metrics, lower is better)


def removed_score(scores: Mapping[str, torch.Tensor], groups: Mapping[str, Group], mask: StructuredMask) -> float:
    """Σ of ``scores`` over the units that ``mask`` ({group: kept indices}) removes."""
    total = 0.0
    for name, kept in mask.items():
        removed = torch.ones(groups[name].size, dtype=torch.bool)
        removed[list(kept)] = False
        total += float(scores[name].double()[removed].sum().item())
    return total


class TaylorFOCriterion:
    """``pruned_taylor_fo`` of any mask: unit scores measured once on the first (dense) model it sees."""

    name = "pruned_taylor_fo"

    def __init__(self, groups: Mapping[str, Group], batches: Callable[[torch.device], Iterable[dict]],
                 loss_fn: Callable[[nn.Module, dict], torch.Tensor]):
        self.groups, self.batches, self.loss_fn = dict(groups), batches, loss_fn
        self.scores: dict[str, torch.Tensor] | None = None

    def __call__(self, dense: nn.Module, mask: StructuredMask) -> float:
        """The criterion of ``mask``; ``dense`` (unpruned) is scored on first use only."""
        if self.scores is None:
            device = next(dense.parameters()).device
            self.scores = taylor_fo_scores(dense, self.groups, self.batches(device), self.loss_fn)
        return removed_score(self.scores, self.groups, mask)
