"""The search's space in pure Python (no torch): active widths, their layers' shapes, and how many candidates each
phase holds, counted by formula and never listed (:mod:`hfprune.study.sparse.search` walks and masks them).

Pure Python so that ``hfprune run`` counts a study, and refuses a huge one, before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from math import prod
from typing import Iterable, Iterator, Sequence

from hfprune.errors import HfpruneError
from hfprune.study.sparse.supports import count_supports

INPUT_SIZE = 2
NUM_OUTPUTS = 1
Widths = tuple[int, ...]


def check_widths(widths: Iterable[int], what: str = "widths") -> Widths:
    """``widths`` as a tuple, or one clear error unless they are positive integers."""
    widths = tuple(widths)
    if not widths or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in widths):
        raise HfpruneError(f"{what} must be positive integers, one per hidden layer (e.g. [3, 3, 3]), "
                           f"got {list(widths)!r}")
    return widths


def layer_shapes(widths: Sequence[int]) -> list[tuple[int, int]]:
    """The active ``(rows, cols)`` block of every layer, input side first, classifier last."""
    sizes = (INPUT_SIZE, *widths, NUM_OUTPUTS)
    return [(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]


def phase1_nonzeros(widths: Sequence[int]) -> int:
    """Nonzero weights of the dense active blocks: 2·d1 + d1·d2 + d2·d3 + d3 for three hidden layers."""
    return sum(rows * cols for rows, cols in layer_shapes(check_widths(widths)))


def _nnz_range(rows: int, cols: int) -> range:
    return range(max(rows, cols), rows * cols + 1)


def widths_per_layer(width_ranges: Sequence[int] | Sequence[Sequence[int]], depth: int) -> list[list[int]]:
    """One list of widths per hidden layer: a single range repeats for every layer."""
    ranges = list(width_ranges)
    if ranges and all(isinstance(d, int) for d in ranges):
        ranges = [ranges] * depth
    ranges = [list(r) for r in ranges]
    if len(ranges) != depth or not all(ranges):
        raise HfpruneError(f"width_ranges must be one range of widths for every layer or {depth} nonempty "
                           f"ranges (e.g. [[1, 2], [1, 2], [1, 2]]), got {width_ranges!r}")
    for layer in ranges:
        check_widths(layer, "width_ranges")
    return ranges


def phase1_model_nonzeros(widths: Sequence[int]) -> int:
    """Nonzero weights + active biases of a phase-1 candidate: the reference's Model NNZ (37 for (3, 3, 3))."""
    return phase1_nonzeros(widths) + sum(widths) + NUM_OUTPUTS


def count_phase1(width_ranges: Sequence[int] | Sequence[Sequence[int]] = range(1, 17), depth: int = 3,
                 max_model_nonzeros: int | None = None) -> int:
    """How many phase-1 candidates :func:`.search.phase1_candidates` yields."""
    ranges = widths_per_layer(width_ranges, depth)
    if max_model_nonzeros is None:
        return prod(len(layer) for layer in ranges)
    return sum(1 for widths in product(*ranges) if phase1_model_nonzeros(widths) <= max_model_nonzeros)


def _check_budgets(budgets: Iterable[int] | None) -> frozenset[int] | None:
    if budgets is None:
        return None
    chosen = frozenset(budgets)
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in chosen):
        raise HfpruneError(f"search budgets must be positive integers (total nonzero weights), got {sorted(chosen)}")
    return chosen


@dataclass(frozen=True)
class Restriction:
    """What of a phase-2 space is searched: totals among ``budgets`` (None: all), at most ``max_nonzeros`` in all,
    and per searched layer only the first ``limits[i]`` supports of each count (None: all)."""

    budgets: frozenset[int] | None = None
    max_nonzeros: int | None = None
    limits: tuple[int | None, ...] | None = None

    @classmethod
    def of(cls, budgets: Iterable[int] | None = None, max_nonzeros: int | None = None,
           limits: Sequence[int | None] | None = None) -> "Restriction":
        if max_nonzeros is not None and (isinstance(max_nonzeros, bool) or not isinstance(max_nonzeros, int)
                                         or max_nonzeros < 1):
            raise HfpruneError(f"max_nonzeros must be a positive integer or null, got {max_nonzeros!r}")
        if limits is not None and any(k is not None and (not isinstance(k, int) or k < 1) for k in limits):
            raise HfpruneError(f"support limits must be positive integers or null, got {list(limits)!r}")
        return cls(_check_budgets(budgets), max_nonzeros, None if limits is None else tuple(limits))

    def keeps(self, total: int) -> bool:
        return (self.budgets is None or total in self.budgets) and (self.max_nonzeros is None
                                                                   or total <= self.max_nonzeros)

    def size(self, layer: int, supports: int) -> int:
        limit = None if self.limits is None or layer >= len(self.limits) else self.limits[layer]
        return supports if limit is None else min(limit, supports)


def count_groups(widths: Widths, restriction: Restriction) -> Iterator[tuple[tuple[int, ...], list[int]]]:
    """Per-layer nonzero counts in the reference's order (first layer slowest), each with its (restricted) support
    counts, keeping only the totals the restriction keeps."""
    shapes = layer_shapes(widths)[:-1]
    dense = widths[-1] * NUM_OUTPUTS
    for counts in product(*(_nnz_range(rows, cols) for rows, cols in shapes)):
        if restriction.keeps(sum(counts) + dense):
            yield counts, [restriction.size(layer, count_supports(rows, cols, nnz))
                           for layer, ((rows, cols), nnz) in enumerate(zip(shapes, counts))]


def check_limit(per_budget_limit: int | None) -> None:
    if per_budget_limit is not None and (isinstance(per_budget_limit, bool) or not isinstance(per_budget_limit, int)
                                         or per_budget_limit < 1):
        raise HfpruneError(f"per_budget_limit must be a positive integer or null, got {per_budget_limit!r}")


def count_phase2(widths: Sequence[int], budgets: Iterable[int] | None = None,
                 per_budget_limit: int | None = None, max_nonzeros: int | None = None,
                 support_limits: Sequence[int | None] | None = None) -> int:
    """How many candidates :func:`.search.phase2_candidates` yields, counted without building any."""
    widths, restriction = check_widths(widths), Restriction.of(budgets, max_nonzeros, support_limits)
    check_limit(per_budget_limit)
    per_total: dict[int, int] = {}
    for counts, sizes in count_groups(widths, restriction):
        total = sum(counts) + widths[-1] * NUM_OUTPUTS
        per_total[total] = per_total.get(total, 0) + prod(sizes)
    if per_budget_limit is None:
        return sum(per_total.values())
    return sum(min(per_budget_limit, size) for size in per_total.values())
