"""Structured criteria: the registry of every :class:`~hfprune.pruning.structured.criterion.Importance` (each one
class owning its options, as Torch-Pruning keeps importance apart from groups and pruners), and the mask a criterion
picks.

- ``random`` — a uniform seeded draw per group (per partition of a grouped-query-attention group);
- ``l1``, ``l2`` — magnitude of everything a unit owns (:mod:`.magnitude`);
- ``wanda``, ``flap`` — activation-aware, from a calibration pass (:mod:`.activation`);
- ``taylor_fo``, ``llm_pruner_taylor`` — first-order Taylor from gradients (:mod:`.taylor`);
- ``block_influence`` — ShortGPT's Block Influence of whole layers (:mod:`.influence`).

The same unit scores, summed over the units a whole mask removes, are a study's mask criteria
(:class:`PrunedTaylorFO`, recorded beside the pruned train loss).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.structured.activation import FlapImportance, WandaImportance
from hfprune.pruning.structured.criterion import Importance, LossFn, select_top
from hfprune.pruning.structured.groups import Group, StructuredMask, kept_counts
from hfprune.pruning.structured.influence import BlockInfluence
from hfprune.pruning.structured.magnitude import L1Importance, L2Importance, l1_scores, l2_scores
from hfprune.pruning.structured.samplers import draw_group
from hfprune.pruning.structured.taylor import LLMPrunerTaylor, TaylorFOImportance, taylor_fo_scores
from hfprune.seeding import stable_seed

__all__ = ["IMPORTANCES", "Importance", "LossFn", "PrunedTaylorFO", "criterion_mask", "get_importance",
           "l1_scores", "l2_scores", "removed_score", "select_top", "taylor_fo_scores"]


class RandomImportance(Importance):
    name = "random"
    summary = "a uniform seeded draw per group"

    def select(self, model, groups, counts, *, seed=0, batches=None, loss_fn=None, scores=None) -> StructuredMask:
        return {name: draw_group(np.random.default_rng(stable_seed("random-criterion", seed, name)), groups[name], keep)
                for name, keep in counts.items()}


IMPORTANCES: dict[str, Importance] = {importance.name: importance for importance in (
    RandomImportance(), L1Importance(), L2Importance(), TaylorFOImportance(), WandaImportance(), FlapImportance(),
    LLMPrunerTaylor(), BlockInfluence())}


def get_importance(method: str, options: Mapping[str, Any] | None = None) -> Importance:
    """The registered structured criterion ``method`` with ``options`` (its fields); an unknown name lists the known
    ones, a bad option names the criterion's options."""
    if method not in IMPORTANCES:
        raise HfpruneError(f"unknown method '{method}'; choose one of: {', '.join(IMPORTANCES)}")
    kind = type(IMPORTANCES[method])
    try:
        return kind(**dict(options or {}))
    except ValidationError as error:
        fields = ", ".join(kind.model_fields) or "none"
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise HfpruneError(f"method {method}: option {where}: {problem['msg']} (its options: {fields})") from None


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
    """The structured mask that criterion ``method`` picks at ``ratios`` (group or kind keys), uniform per group."""
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
