"""Masks over a run's prunable weights: the budget check, global magnitude selection, random masks, top-k."""

from __future__ import annotations

import numbers

import torch

from hfprune.errors import HfpruneError
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.pruning.unstructured.radix import prune_smallest

Masks = dict[str, torch.Tensor]


def check_budget(run: SparseRun, budget: int, method: str) -> None:
    """A budget a method can reach: at least one and fewer than all of the run's prunable weights."""
    total = run.total_weights
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or not 0 < budget < total:
        raise HfpruneError(f"{method}: budget {budget!r} must be a whole number of nonzero weights in [1, {total - 1}] "
                           f"(the model has {total} prunable weights); lower or raise the budget")


def dense_masks(run: SparseRun) -> Masks:
    """Masks that keep every prunable weight."""
    return {name: torch.ones(weight.shape, dtype=torch.bool) for name, weight in run.weights.items()}


def count(masks: Masks) -> int:
    return sum(int(mask.sum()) for mask in masks.values())


@torch.no_grad()
def magnitude_masks(run: SparseRun, keep: int, current: Masks | None = None) -> Masks:
    """Keep exactly the ``keep`` largest |w| over all of the run's weights together (one global threshold).

    With ``current`` masks, only weights they keep can stay (the masks nest): a pruned weight scores below
    every kept one, a kept weight that happens to be exactly zero included. Ties go to the later weights.
    (The reference keeps the weights strictly above the (N − keep + 1)-th smallest |w|, one fewer than asked.)
    """
    tiny = torch.finfo(torch.float32).tiny
    scores = []
    for name, weight in run.weights.items():
        score = weight.detach().abs().float().cpu().clamp_min(tiny)
        if current is not None:
            score = torch.where(current[name], score, torch.zeros_like(score))
        scores.append(score)
    selection = prune_smallest(scores, run.total_weights - keep)
    return dict(zip(run.weights, selection.masks))


def random_masks(run: SparseRun, keep: int, generator: torch.Generator) -> Masks:
    """Exactly ``keep`` weights kept, drawn uniformly over all of the run's weights together."""
    flat = torch.zeros(run.total_weights, dtype=torch.bool)
    flat[torch.randperm(run.total_weights, generator=generator)[:keep]] = True
    masks, start = {}, 0
    for name, weight in run.weights.items():
        masks[name] = flat[start:start + weight.numel()].view(weight.shape).clone()
        start += weight.numel()
    return masks


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A boolean mask of ``scores``' shape, True at its ``k`` largest entries (ties: the lower flat index)."""
    order = torch.sort(scores.reshape(-1), descending=True, stable=True).indices
    flat = torch.zeros(scores.numel(), dtype=torch.bool)
    flat[order[:k]] = True
    return flat.view(scores.shape)
