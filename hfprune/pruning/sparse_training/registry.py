"""The registered sparse-training methods (one line each), and validation of a method's options by its class.

A study names its methods and their options; :data:`SparseMethodEntry` is the discriminated union it holds
(a bare name means the method with its default options), :func:`sparse_method_from` builds one from a name.
"""

from __future__ import annotations

from typing import Any

from hfprune.config.registry import entry_type, method_from_registry, option_names  # noqa: F401 - re-exported
from hfprune.pruning.sparse_training.at_init import Force, Grasp, IterSnip, Prospr, Snip, Synflow
from hfprune.pruning.sparse_training.base import SparseTrainingMethod
from hfprune.pruning.sparse_training.baselines import MagnitudeAfterTraining, RandomSparse
from hfprune.pruning.sparse_training.gradual import GradualMagnitude
from hfprune.pruning.sparse_training.lottery import LotteryTicket
from hfprune.pruning.sparse_training.rigl import RigL

SPARSE_METHODS: dict[str, type[SparseTrainingMethod]] = {method.model_fields["name"].default: method for method in (
    # pruning during or after training
    GradualMagnitude,
    LotteryTicket,
    RigL,
    MagnitudeAfterTraining,
    # pruning at initialisation
    RandomSparse,
    Snip,
    IterSnip,
    Force,
    Grasp,
    Synflow,
    Prospr,
)}


# names that meant a sparse-training method in earlier versions, and now mean something else or nothing
RETIRED = {
    "gmp": "is global magnitude pruning, an unstructured method, in hfprune; gradual magnitude pruning during "
           "training (Zhu & Gupta) is the sparse-training method 'gradual_magnitude'",
    "random": "is the structured criterion that drops random units; the random mask at initialisation is the "
              "sparse-training method 'random_at_init'",
}

SparseMethodEntry = entry_type(SPARSE_METHODS, RETIRED)


def sparse_method_from(method: str | SparseTrainingMethod, **options: Any) -> SparseTrainingMethod:
    """The sparse-training method ``method`` with ``options``, validated by its class; problems are one
    HfpruneError line."""
    if isinstance(method, SparseTrainingMethod):
        if not options:
            return method
        options, method = {**method.options(), **options}, method.name
    return method_from_registry(SPARSE_METHODS, "sparse-training method", method, options, RETIRED)
