"""Structured importance: how a criterion scores every unit of a group, and the mask that keeps the best.

Each criterion is one registered :class:`Importance` (as Torch-Pruning keeps importance apart from groups and
pruners): it says whether it needs calibration data and how it scores units; :meth:`Importance.select` keeps
the ``counts[g]`` best units of each group.

- ``random`` — a uniform seeded draw per group (no scores).
- ``l1`` — L1 norm of everything a unit owns (its rows and biases, the consumer's columns).
- ``taylor_fo`` — |∂L/∂gate| of the unit's gate (:class:`~hfprune.pruning.structured.gates.UnitGates`),
  accumulated over calibration batches (Molchanov et al. 2019, first-order Taylor).

The same unit scores, summed over the units a whole mask removes, are a study's mask criteria
(:class:`PrunedTaylorFO`, recorded beside the pruned train loss).
"""

from __future__ import annotations

from typing import Callable, ClassVar, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.structured.gates import UnitGates
from hfprune.pruning.structured.groups import Group, StructuredMask, kept_counts
from hfprune.pruning.structured.samplers import draw_kept
from hfprune.seeding import stable_seed

LossFn = Callable[[nn.Module, dict], torch.Tensor]


def select_top(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int]) -> StructuredMask:
    """Keep the ``counts[g]`` highest-scoring units of each group (ties: lower index first)."""
    mask = {}
    for name, keep in counts.items():
        score = scores[name].detach().double().cpu()
        order = sorted(range(len(score)), key=lambda i: (-score[i].item(), i))
        mask[name] = tuple(sorted(order[:keep]))
    return mask


@torch.no_grad()
def l1_scores(model: nn.Module, groups: dict[str, Group], names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Per unit, the L1 norm of every parameter slice the unit owns."""
    params = dict(model.named_parameters())
    scores = {}
    for name in names if names is not None else groups:
        group = groups[name]
        total = torch.zeros(group.size, dtype=torch.float64)
        for piece in group.owned:
            if piece.param not in params:
                continue
            w = params[piece.param].detach().abs().double().movedim(piece.dim, 0)
            total += w.reshape(group.size, -1).sum(1).cpu()
        scores[name] = total
    return scores


def taylor_fo_scores(
    model: nn.Module,
    groups: dict[str, Group],
    batches: Iterable[dict],
    loss_fn: Callable[[nn.Module, dict], torch.Tensor],
    names: Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Per unit, Σ over batches of |∂L/∂gate| (gates at 1: the dense model), model in eval mode."""
    names = list(names if names is not None else groups)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = {name: torch.zeros(groups[name].size, dtype=torch.float64) for name in names}
    seen = 0
    with UnitGates(model, {name: groups[name] for name in names}, requires_grad=True) as gates:
        for batch in batches:
            batch = {key: value.to(device) for key, value in batch.items()}
            gates.zero_grad()
            loss = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, [gates.gates[name] for name in names])
            for name, grad in zip(names, grads):
                scores[name] += grad.detach().abs().double().cpu()
            seen += 1
    model.train(was_training)
    if not seen:
        raise HfpruneError("taylor_fo needs calibration data: give at least one batch")
    return scores


class Importance:
    """A structured criterion: scores per unit (higher = more important) and the mask that keeps the best."""

    name: ClassVar[str]
    needs_calibration: ClassVar[bool] = False

    def scores(self, model: nn.Module, groups: dict[str, Group], names: Iterable[str], *,
               batches: Iterable[dict] | None, loss_fn: LossFn | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def select(self, model: nn.Module, groups: dict[str, Group], counts: Mapping[str, int], *, seed: int = 0,
               batches: Iterable[dict] | None = None, loss_fn: LossFn | None = None) -> StructuredMask:
        """Keep the ``counts[g]`` most important units of each group ``g``."""
        if self.needs_calibration and (batches is None or loss_fn is None):
            raise HfpruneError(f"method {self.name} needs calibration data (e.g. --calibration-data DATASET)")
        return select_top(self.scores(model, groups, counts, batches=batches, loss_fn=loss_fn), counts)


class RandomImportance(Importance):
    name = "random"

    def select(self, model, groups, counts, *, seed=0, batches=None, loss_fn=None) -> StructuredMask:
        return {name: draw_kept(np.random.default_rng(stable_seed("random-criterion", seed, name)),
                                groups[name].size, keep) for name, keep in counts.items()}


class L1Importance(Importance):
    name = "l1"

    def scores(self, model, groups, names, *, batches, loss_fn):
        return l1_scores(model, groups, names)


class TaylorFOImportance(Importance):
    name = "taylor_fo"
    needs_calibration = True

    def scores(self, model, groups, names, *, batches, loss_fn):
        return taylor_fo_scores(model, groups, batches, loss_fn, names)


IMPORTANCES: dict[str, Importance] = {
    importance.name: importance for importance in (RandomImportance(), L1Importance(), TaylorFOImportance())}


def get_importance(method: str) -> Importance:
    """The registered structured criterion ``method``; an unknown name lists the known ones."""
    if method not in IMPORTANCES:
        raise HfpruneError(f"unknown method '{method}'; choose one of: {', '.join(IMPORTANCES)}")
    return IMPORTANCES[method]


def criterion_mask(
    method: str,
    model: nn.Module,
    groups: dict[str, Group],
    ratios: Mapping[str, float],
    *,
    seed: int = 0,
    batches: Iterable[dict] | None = None,
    loss_fn: LossFn | None = None,
) -> StructuredMask:
    """The structured mask that criterion ``method`` picks at ``ratios`` (group or kind keys)."""
    importance = get_importance(method)
    return importance.select(model, groups, kept_counts(groups, ratios), seed=seed, batches=batches, loss_fn=loss_fn)


# -- a whole mask's criterion (paper App. B.1): what the units it removes were worth ------------------------------
# Σ over the units a mask removes of a per-unit score of the dense model: ``pruned_taylor_fo`` sums the Taylor-FO
# scores. Unit scores depend only on the dense model, so a study computes them once and every trial adds up its
# removed units. Lower is better (removing less important units).
MASK_CRITERIA = "criteria"  # key of a mask's facts that carries its criterion values (metrics, lower is better)


def removed_score(scores: Mapping[str, torch.Tensor], groups: Mapping[str, Group], mask: StructuredMask) -> float:
    """Σ of ``scores`` over the units that ``mask`` ({group: kept indices}) removes."""
    total = 0.0
    for name, kept in mask.items():
        removed = torch.ones(groups[name].size, dtype=torch.bool)
        removed[list(kept)] = False
        total += float(scores[name].double()[removed].sum().item())
    return total


class PrunedTaylorFO:
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
