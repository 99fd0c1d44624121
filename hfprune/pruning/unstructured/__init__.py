"""Unstructured pruning of Linear weights: registered methods (UMP, GMP, ONP, PNP, Wanda, OWL, SparseGPT), each a
weight score, an allocation of the sparsity over layers and a granularity (layer, row, N:M) — or its own
reconstruction (SparseGPT) —, with layer-by-layer calibration, exact radix-select thresholds, and targets found by
walking the model (the Linears of its transformer blocks) or named by regexes."""

from hfprune.pruning.unstructured.allocation import pca_share, spread_ratios
from hfprune.pruning.unstructured.calibration import prune_layer_by_layer
from hfprune.pruning.unstructured.granularity import Granularity, keep_n_of_m, keep_per_row, parse_granularity
from hfprune.pruning.unstructured.methods import UnstructuredMethod, UnstructuredResult
from hfprune.pruning.unstructured.prune import unstructured_masks
from hfprune.pruning.unstructured.registry import METHODS, MethodEntry, method_from
from hfprune.pruning.unstructured.scores import SCORES, activation_norms
from hfprune.pruning.unstructured.radix import LazyScores, Threshold, kth_smallest_abs, prune_smallest
from hfprune.pruning.unstructured.sparsegpt import sparsegpt_prune
from hfprune.pruning.unstructured.targets import Target, default_targets, layer_group, list_targets, select_targets

__all__ = [
    "METHODS",
    "Granularity",
    "LazyScores",
    "MethodEntry",
    "SCORES",
    "Target",
    "Threshold",
    "UnstructuredMethod",
    "UnstructuredResult",
    "activation_norms",
    "default_targets",
    "keep_n_of_m",
    "keep_per_row",
    "kth_smallest_abs",
    "layer_group",
    "list_targets",
    "method_from",
    "parse_granularity",
    "pca_share",
    "prune_layer_by_layer",
    "prune_smallest",
    "select_targets",
    "sparsegpt_prune",
    "spread_ratios",
    "unstructured_masks",
]
