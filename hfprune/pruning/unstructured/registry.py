"""The registered unstructured methods (one line each), and validation of a method's options through its class.

Recipes and ``hfprune prune`` name a method and its options; both are validated by the method's own pydantic
model (:data:`MethodEntry` is the discriminated union a recipe's ``pruning.methods`` holds), so nothing else
lists method names.
"""

from __future__ import annotations

from typing import Any

from hfprune.config.registry import entry_type, method_from_registry, option_names  # noqa: F401 - re-exported
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


MethodEntry = entry_type(METHODS)


def method_from(method: str | UnstructuredMethod, **options: Any) -> UnstructuredMethod:
    """The method ``method`` with ``options``, validated by its class; problems are one HfpruneError line."""
    if isinstance(method, UnstructuredMethod):
        if not options:
            return method
        options, method = {**method.options(), "label": method.label, **options}, method.name
    return method_from_registry(METHODS, "unstructured method", method, options)
