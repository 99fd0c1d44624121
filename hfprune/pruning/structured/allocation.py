"""How a kind's ratio (``heads=0.25``) is spread over its groups (one per block):

- ``uniform`` — every group at the ratio (per-group keys may differ: ``layers.3.heads=0.5``);
- ``global`` — one budget per kind, ``round(ratio × all its units)`` removed where the criterion's scores are lowest
  over all groups together (as Torch-Pruning's and LLM-Pruner's global pruning);
- ``owl`` — per block from its outlier ratio D_l (OWL, Yin et al. 2024: the share of the block's Wanda scores
  |W|·‖X‖₂ above M × their mean): blocks with more outliers get a lower ratio, spread linearly over [S−λ, S+λ]
  with mean S (:func:`~hfprune.pruning.unstructured.allocation.spread_ratios`), rounded so the kind loses exactly
  ``round(S × its units)``.

Grouped-query attention's heads keep equally many query heads per key/value group: a group with partitions gives up
units in *slots* of one unit per partition (a slot's score: the mean of the partitions' scores of that rank), so
every count is a multiple of the partitions. A group keeps at least its ``min_kept`` units either way.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from hfprune.errors import HfpruneError
from hfprune.pruning.counts import num_pruned
from hfprune.pruning.structured.groups import Group, expand_ratios, kept_counts
from hfprune.pruning.unstructured.allocation import spread_ratios

ALLOCATIONS = ("uniform", "global", "owl")


def check_allocation(groups: Mapping[str, Group], ratios: Mapping[str, float], allocation: str) -> dict[str, float]:
    """The ratios per kind a ``global`` or ``owl`` allocation spreads (an HfpruneError for a group or set key, or
    an unknown allocation); for ``uniform``, the checked per-group counts' ratios."""
    if allocation not in ALLOCATIONS:
        raise HfpruneError(f"--allocation: unknown allocation '{allocation}'; choose one of: {', '.join(ALLOCATIONS)}")
    expand_ratios(groups, ratios)
    if allocation == "uniform":
        kept_counts(groups, ratios)
        return dict(ratios)
    kinds = {group.kind for group in groups.values()}
    other = [key for key in ratios if key not in kinds]
    if other:
        raise HfpruneError(f"--allocation {allocation} spreads a ratio per kind ({', '.join(sorted(kinds))}); "
                           f"'{other[0]}' is no kind: use --allocation uniform for per-group ratios")
    for kind, ratio in ratios.items():
        _budget(groups, kind, ratio)
    return dict(ratios)


def _members(groups: Mapping[str, Group], kind: str) -> list[Group]:
    return [group for group in groups.values() if group.kind == kind]


def _budget(groups: Mapping[str, Group], kind: str, ratio: float) -> int:
    """Slots the kind gives up at ``ratio`` (an HfpruneError when that removes nothing or is impossible)."""
    members = _members(groups, kind)
    total = sum(group.size for group in members)
    removed = num_pruned(total, ratio)
    step = members[0].partitions
    if any(group.partitions != step for group in members):
        raise HfpruneError(f"{kind} groups differ in their key/value groups; use --allocation uniform")
    most = sum(group.size - _least_kept(group) for group in members)
    if ratio and (removed == 0 or removed > most or removed % step):
        why = ("removes nothing" if removed == 0 else f"removes more than the {most} that can go" if removed > most
               else f"removes {removed}, not a multiple of the {step} key/value groups of a block")
        raise HfpruneError(f"ratio {ratio} of {kind} ({total} units) {why}; choose another ratio")
    return removed // step


def _least_kept(group: Group) -> int:
    return math.ceil(max(group.min_kept, 1) / group.partitions) * group.partitions


def slot_scores(group: Group, scores: torch.Tensor) -> torch.Tensor:
    """Per slot of ``group`` (rank j within every partition, best first), the mean of the partitions' j-th scores."""
    parts = scores.double().reshape(group.partitions, group.part_size)
    return parts.sort(dim=1, descending=True).values.mean(0)


def global_counts(groups: Mapping[str, Group], ratios: Mapping[str, float],
                  scores: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Kept units per group: each kind's lowest-scoring slots over all its groups go, ``round(ratio × units)`` in
    all, none below a group's minimum."""
    counts: dict[str, int] = {}
    for kind, ratio in ratios.items():
        members = _members(groups, kind)
        budget = _budget(groups, kind, ratio)
        slots = []
        for order, group in enumerate(members):
            for rank, value in enumerate(slot_scores(group, scores[group.name]).tolist()):
                slots.append((value, order, -rank, group))
        kept = {group.name: group.part_size for group in members}
        for value, _, _, group in sorted(slots, key=lambda slot: slot[:3]):
            if budget == 0:
                break
            if (kept[group.name] - 1) * group.partitions >= _least_kept(group):
                kept[group.name] -= 1
                budget -= 1
        counts.update({group.name: kept[group.name] * group.partitions for group in members})
    return counts


def owl_counts(groups: Mapping[str, Group], ratios: Mapping[str, float], outliers: Mapping[str, float],
               lam: float) -> dict[str, int]:
    """Kept units per group from each group's block's outlier ratio (``outliers``: group name → D_l)."""
    counts: dict[str, int] = {}
    for kind, ratio in ratios.items():
        members = _members(groups, kind)
        budget = _budget(groups, kind, ratio)
        spread = spread_ratios({group.name: outliers[group.name] for group in members},
                               {group.name: group.size for group in members}, ratio, lam)
        wanted = {group.name: spread[group.name] * group.part_size for group in members}
        most = {group.name: group.part_size - _least_kept(group) // group.partitions for group in members}
        removed = {name: min(most[name], math.floor(value)) for name, value in wanted.items()}
        order = sorted(members, key=lambda group: -(wanted[group.name] - math.floor(wanted[group.name])))
        while sum(removed.values()) != budget:
            step = 1 if sum(removed.values()) < budget else -1
            moved = False
            for group in order if step > 0 else reversed(order):
                if 0 <= removed[group.name] + step <= most[group.name]:
                    removed[group.name] += step
                    moved = True
                    if sum(removed.values()) == budget:
                        break
            if not moved:
                raise HfpruneError(f"owl cannot spread ratio {ratio} of {kind} within the groups' limits")
        counts.update({group.name: (group.part_size - removed[group.name]) * group.partitions for group in members})
    return counts
