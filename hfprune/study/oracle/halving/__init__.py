"""Retraining-aware mask selection: successive halving over a setting's candidate masks (docs/studies.md §7)."""

from hfprune.study.oracle.halving.stage import successive_halving
from hfprune.study.oracle.halving.rungs import Rung, rungs

__all__ = ["Rung", "rungs", "successive_halving"]
