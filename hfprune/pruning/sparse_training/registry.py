"""The registered sparse-training methods (one line each), and validation of a method's options by its class.

A study names its methods and their options; :data:`SparseMethodEntry` is the discriminated union it holds
(a bare name means the method with its default options), :func:`sparse_method_from` builds one from a name.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field

from hfprune.config.schema import validate_document
from hfprune.errors import HfpruneError
from hfprune.pruning.sparse_training.at_init import Force, Grasp, IterSnip, Prospr, Snip, Synflow
from hfprune.pruning.sparse_training.base import SparseTrainingMethod
from hfprune.pruning.sparse_training.baselines import MagnitudeAfterTraining, RandomSparse
from hfprune.pruning.sparse_training.gmp import GradualMagnitude
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


def _entry(value: Any) -> Any:
    """A method given by name alone (``rigl``) is the method with its default options."""
    return {"name": value} if isinstance(value, str) else value


SparseMethodEntry = Annotated[Union[tuple(SPARSE_METHODS.values())], Field(discriminator="name"),
                              BeforeValidator(_entry)]


def option_names(method: type[SparseTrainingMethod]) -> list[str]:
    return [name for name in method.model_fields if name != "name"]


def sparse_method_from(method: str | SparseTrainingMethod, **options: Any) -> SparseTrainingMethod:
    """The sparse-training method ``method`` with ``options``, validated by its class; problems are one
    HfpruneError line."""
    if isinstance(method, SparseTrainingMethod):
        if not options:
            return method
        options, method = {**method.options(), **options}, method.name
    if method not in SPARSE_METHODS:
        raise HfpruneError(f"unknown sparse-training method '{method}'; choose one of: {', '.join(SPARSE_METHODS)}")
    accepted = option_names(SPARSE_METHODS[method])
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        others = [name for name, other in SPARSE_METHODS.items() if unknown[0] in option_names(other)]
        hint = f"; '{unknown[0]}' applies to {', '.join(others)} only" if others else ""
        raise HfpruneError(f"sparse-training method '{method}' has no option '{unknown[0]}' (its options: "
                           f"{', '.join(accepted) or 'none'}){hint}")
    return validate_document(SPARSE_METHODS[method], {"name": method, **options}, "options of sparse-training method",
                             f"'{method}'")
