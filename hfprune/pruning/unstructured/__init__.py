"""Unstructured pruning of Linear weights: registered methods (UMP, GMP, ONP, PNP) composed of a weight score
and an allocation of the sparsity over layers, exact radix-select thresholds, target regexes."""

from hfprune.pruning.unstructured.allocation import pca_share, spread_ratios
from hfprune.pruning.unstructured.methods import UnstructuredMethod, UnstructuredResult
from hfprune.pruning.unstructured.prune import unstructured_masks
from hfprune.pruning.unstructured.registry import METHODS, MethodEntry, method_from
from hfprune.pruning.unstructured.scores import SCORES, activation_norms
from hfprune.pruning.unstructured.selection import Threshold, kth_smallest_abs, prune_smallest
from hfprune.pruning.unstructured.targets import layer_group, select_targets

__all__ = [
    "METHODS",
    "MethodEntry",
    "SCORES",
    "Threshold",
    "UnstructuredMethod",
    "UnstructuredResult",
    "activation_norms",
    "kth_smallest_abs",
    "layer_group",
    "method_from",
    "pca_share",
    "prune_smallest",
    "select_targets",
    "spread_ratios",
    "unstructured_masks",
]
