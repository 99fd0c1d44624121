"""Pruning criteria: score every unit of every group, keep the best-scoring ones.

``ratios`` name a group (``layers.3.heads``) or a kind of group (``heads``, ``ffn``, ``filters``)
that stands for every group of that kind; a group's own entry wins over its kind's. A ratio is
the fraction of the group's units to remove (round half up, as everywhere in hfprune).

Methods:
- ``random`` — uniform draw per group, seeded.
- ``l1`` — L1 norm of everything a unit owns (its rows and biases, the consumer's columns).
- ``taylor_fo`` — |∂L/∂gate| of the unit's gate (:class:`~hfprune.pruning.gates.UnitGates`),
  accumulated over calibration batches (Molchanov et al. 2019, first-order Taylor).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.structured.gates import UnitGates
from hfprune.pruning.structured.groups import Group, StructuredMask, num_pruned
from hfprune.seeding import stable_seed

METHODS = ("random", "l1", "taylor_fo")


def expand_kinds(groups: dict[str, Group], ratios: Mapping[str, float]) -> dict[str, float]:
    """Replace kind keys (``heads``) by every group of that kind; group names win over kinds;
    keys that are neither stay as they are (for the caller to report)."""
    kinds = {group.kind for group in groups.values()}
    expanded = {key: ratio for key, ratio in ratios.items() if key not in kinds or key in groups}
    for name, group in groups.items():
        if name not in expanded and group.kind in ratios and group.kind not in groups:
            expanded[name] = ratios[group.kind]
    return {name: expanded[name] for name in [*groups, *expanded] if name in expanded}


def expand_ratios(groups: dict[str, Group], ratios: Mapping[str, float]) -> dict[str, float]:
    """Per-group ratios from group names and/or group kinds; unknown keys are an HfpruneError."""
    kinds = sorted({group.kind for group in groups.values()})
    unknown = [key for key in ratios if key not in groups and key not in kinds]
    if unknown:
        raise HfpruneError(
            f"unknown structure '{unknown[0]}'; use a kind ({', '.join(kinds)}) or a group name "
            f"(e.g. {', '.join(list(groups)[:3])}, ...)"
        )
    expanded = expand_kinds(groups, ratios)
    for name, ratio in expanded.items():
        if not 0 <= ratio <= 1:
            raise HfpruneError(f"ratio of '{name}' must be in [0, 1], got {ratio}")
    return expanded


def kept_counts(groups: dict[str, Group], ratios: Mapping[str, float]) -> dict[str, int]:
    """Units kept per group at ``ratios`` (group or kind keys)."""
    return {name: groups[name].size - num_pruned(groups[name].size, ratio)
            for name, ratio in expand_ratios(groups, ratios).items()}


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


def random_mask(groups: dict[str, Group], counts: Mapping[str, int], seed: int) -> StructuredMask:
    mask = {}
    for name, keep in counts.items():
        rng = np.random.default_rng(stable_seed("random-criterion", seed, name))
        mask[name] = tuple(sorted(rng.choice(groups[name].size, size=keep, replace=False).tolist()))
    return mask


def criterion_mask(
    method: str,
    model: nn.Module,
    groups: dict[str, Group],
    ratios: Mapping[str, float],
    *,
    seed: int = 0,
    batches: Iterable[dict] | None = None,
    loss_fn: Callable[[nn.Module, dict], torch.Tensor] | None = None,
) -> StructuredMask:
    """The structured mask that ``method`` picks at ``ratios``."""
    counts = kept_counts(groups, ratios)
    if method == "random":
        return random_mask(groups, counts, seed)
    if method == "l1":
        return select_top(l1_scores(model, groups, counts), counts)
    if method == "taylor_fo":
        if batches is None or loss_fn is None:
            raise HfpruneError("method taylor_fo needs calibration data (e.g. --calibration-data DATASET)")
        return select_top(taylor_fo_scores(model, groups, batches, loss_fn, counts), counts)
    raise HfpruneError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
