"""The one rounding rule of every pruning ratio in hfprune."""

from __future__ import annotations


def num_pruned(size: int, ratio: float) -> int:
    """Units (or weights) removed from ``size`` at ``ratio``: round half up."""
    return int(ratio * size + 0.5)
