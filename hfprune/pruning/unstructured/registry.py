"""The registered unstructured methods (one line each), and validation of a method's options through its class.

Recipes and ``hfprune prune`` name a method and its options; both are validated by the method's own pydantic
model (:data:`MethodEntry` is the discriminated union a recipe's ``pruning.methods`` holds), so nothing else
lists method names.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field

from hfprune.config.schema import validate_document
from hfprune.errors import HfpruneError
from hfprune.pruning.unstructured.methods import (
    GlobalMagnitude,
    OutlierNonUniform,
    OwlWanda,
    PcaNonUniform,
    UniformMagnitude,
    UnstructuredMethod,
    Wanda,
)
from hfprune.pruning.unstructured.sparsegpt import SparseGPT

METHODS: dict[str, type[UnstructuredMethod]] = {method.model_fields["name"].default: method for method in (
    UniformMagnitude,
    GlobalMagnitude,
    OutlierNonUniform,
    PcaNonUniform,
    Wanda,
    OwlWanda,
    SparseGPT,
)}


def _entry(value: Any) -> Any:
    """A method given by name alone (``ump``) is the method with its default options."""
    return {"name": value} if isinstance(value, str) else value


MethodEntry = Annotated[Union[tuple(METHODS.values())], Field(discriminator="name"), BeforeValidator(_entry)]


def option_names(method: type[UnstructuredMethod]) -> list[str]:
    return [name for name in method.model_fields if name != "name"]


def method_from(method: str | UnstructuredMethod, **options: Any) -> UnstructuredMethod:
    """The method ``method`` with ``options``, validated by its class; problems are one HfpruneError line."""
    if isinstance(method, UnstructuredMethod):
        if not options:
            return method
        options, method = {**method.options(), "label": method.label, **options}, method.name
    if method not in METHODS:
        raise HfpruneError(f"unknown unstructured method '{method}'; choose one of: {', '.join(METHODS)}")
    accepted = option_names(METHODS[method])
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        others = [name for name, other in METHODS.items() if unknown[0] in option_names(other)]
        hint = f"; '{unknown[0]}' applies to {', '.join(others)} only" if others else ""
        raise HfpruneError(f"method '{method}' has no option '{unknown[0]}' (its options: {', '.join(accepted)})"
                           f"{hint}")
    return validate_document(METHODS[method], {"name": method, **options}, "options of method", f"'{method}'")
