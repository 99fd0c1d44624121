"""Unstructured magnitude pruning of Linear weights: UMP, GMP, ONP, PNP (see :mod:`.methods`)."""

from hfprune.pruning.unstructured.allocation import activation_norms, pca_share, spread_ratios
from hfprune.pruning.unstructured.methods import (
    UNSTRUCTURED_METHODS,
    UnstructuredMethod,
    UnstructuredResult,
    unstructured_masks,
)
from hfprune.pruning.unstructured.report import SparsityRow, format_sparsity_table, sparsity_table
from hfprune.pruning.unstructured.selection import Threshold, kth_smallest_abs, prune_smallest
from hfprune.pruning.unstructured.targets import DECODER_LINEAR_TARGETS, layer_group, select_targets

__all__ = [
    "DECODER_LINEAR_TARGETS",
    "UNSTRUCTURED_METHODS",
    "SparsityRow",
    "Threshold",
    "UnstructuredMethod",
    "UnstructuredResult",
    "activation_norms",
    "format_sparsity_table",
    "kth_smallest_abs",
    "layer_group",
    "pca_share",
    "prune_smallest",
    "select_targets",
    "sparsity_table",
    "spread_ratios",
    "unstructured_masks",
]
