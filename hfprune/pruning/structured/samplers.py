"""Candidate masks for a study: every combination, or seeded random draws, each with a stable id."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass

import numpy as np

from hfprune.errors import HfpruneError
from hfprune.pruning.structured.groups import Group, StructuredMask, kept_counts
from hfprune.seeding import stable_seed

MAX_EXHAUSTIVE = 1_000_000


@dataclass(frozen=True)
class MaskCandidate:
    """One structured mask of a pruning setting (a study's candidate)."""

    setting: str
    mask: StructuredMask

    @property
    def mask_id(self) -> str:
        return mask_id(self.mask)

    def facts(self) -> dict:
        """What a trial record keeps about the candidate: its kept units per group."""
        return {"mask": {name: list(kept) for name, kept in self.mask.items()}}


def mask_id(mask: StructuredMask) -> str:
    """12 hex digits that depend only on the kept indices, never on order or process."""
    canonical = json.dumps({name: sorted(kept) for name, kept in sorted(mask.items())})
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def draw_kept(rng: np.random.Generator, size: int, keep: int) -> tuple[int, ...]:
    """``keep`` distinct units of ``size``, sorted, drawn uniformly with ``rng`` (every seeded mask draw)."""
    return tuple(sorted(rng.choice(size, size=keep, replace=False).tolist()))


def _kept_counts(groups: dict[str, Group], ratios: dict[str, float], setting: str) -> dict[str, int]:
    return kept_counts(groups, ratios, where=f"setting '{setting}': ")


def _combinations(group: Group, keep: int) -> int:
    """Ways ``group`` keeps ``keep`` units (equally many in each of its partitions)."""
    return math.comb(group.part_size, keep // group.partitions) ** group.partitions


def _all_kept(group: Group, keep: int):
    """Every kept set of ``group``, in lexicographic order."""
    size, per_part = group.part_size, keep // group.partitions
    parts = [itertools.combinations(range(part * size, (part + 1) * size), per_part) for part in range(group.partitions)]
    return (tuple(unit for chosen in combo for unit in chosen) for combo in itertools.product(*parts))


def draw_group(rng: np.random.Generator, group: Group, keep: int) -> tuple[int, ...]:
    """A uniform draw of ``keep`` units of ``group`` (equally many in each partition)."""
    if group.partitions == 1:
        return draw_kept(rng, group.size, keep)
    size = group.part_size
    return tuple(part * size + unit for part in range(group.partitions)
                 for unit in draw_kept(rng, size, keep // group.partitions))


def count_combinations(groups: dict[str, Group], ratios: dict[str, float], setting: str = "") -> int:
    """How many distinct masks a setting has."""
    counts = _kept_counts(groups, ratios, setting)
    return math.prod(_combinations(groups[name], keep) for name, keep in counts.items())


def exhaustive(groups: dict[str, Group], ratios: dict[str, float], setting: str) -> list[MaskCandidate]:
    """Every combination, in lexicographic order of kept indices."""
    counts = _kept_counts(groups, ratios, setting)
    per_group = [_all_kept(groups[name], keep) for name, keep in counts.items()]
    return [MaskCandidate(setting, dict(zip(counts, combo))) for combo in itertools.product(*per_group)]


def sample(
    groups: dict[str, Group], ratios: dict[str, float], setting: str, num: int, seed: int
) -> list[MaskCandidate]:
    """``num`` distinct random masks, the same for the same seed (fewer if fewer exist)."""
    counts = _kept_counts(groups, ratios, setting)
    total = count_combinations(groups, ratios, setting)
    if num >= total:
        return exhaustive(groups, ratios, setting)
    rng = np.random.default_rng(stable_seed("masks", seed, setting))
    seen: set[str] = set()
    candidates: list[MaskCandidate] = []
    while len(candidates) < num:
        mask = {name: draw_group(rng, groups[name], keep) for name, keep in counts.items()}
        identifier = mask_id(mask)
        if identifier not in seen:
            seen.add(identifier)
            candidates.append(MaskCandidate(setting, mask))
    return candidates


def candidates_for(
    groups: dict[str, Group], ratios: dict[str, float], setting: str, mode: str, num: int, seed: int
) -> list[MaskCandidate]:
    """``mode``: 'exhaustive', 'random' (``num`` draws) or 'auto' (exhaustive when ≤ ``num``)."""
    total = count_combinations(groups, ratios, setting)
    if mode == "exhaustive" and total > MAX_EXHAUSTIVE:
        raise HfpruneError(
            f"setting '{setting}' has {total:,} masks, too many to enumerate; "
            f"use candidates.mode: random with candidates.num: N"
        )
    if mode == "exhaustive" or (mode == "auto" and total <= num):
        return exhaustive(groups, ratios, setting)
    return sample(groups, ratios, setting, num, seed)
