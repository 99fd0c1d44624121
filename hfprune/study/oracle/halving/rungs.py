"""The rungs of successive halving: how many candidates are retrained up to which epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hfprune.errors import HfpruneError


@dataclass(frozen=True)
class Rung:
    """``size`` candidates are retrained up to epoch ``budget`` of the full retraining schedule."""

    budget: int
    size: int


def rungs(candidates: int, eta: int, min_fraction: float, epochs: int) -> list[Rung]:
    """Budgets r, r·eta, r·eta², … epochs (r = round(min_fraction · epochs), at least 1), the last one the full
    ``epochs``; every rung keeps ceil(1/eta) of the candidates before it (at least one).

    All candidates enter the first rung; the best of the last rung (fully retrained) is the choice.
    """
    if epochs < 1:
        raise HfpruneError("successive halving needs retrain.epochs >= 1")
    if candidates < 1:
        raise HfpruneError("successive halving needs at least one candidate mask")
    budget, size, plan = max(1, round(min_fraction * epochs)), candidates, []
    while True:
        plan.append(Rung(min(budget, epochs), size))
        if budget >= epochs:
            return plan
        budget, size = budget * eta, max(1, math.ceil(size / eta))


def epochs_spent(plan: list[Rung]) -> int:
    """Retraining epochs of the whole selection: each rung trains its candidates on from the rung before."""
    previous, total = 0, 0
    for rung in plan:
        total += rung.size * (rung.budget - previous)
        previous = rung.budget
    return total
