"""What one trial of a sparse study trains: a search candidate under its fixed mask, a pruning method at a budget,
or the dense model (the reference point)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hfprune.pruning.sparse_training.base import SparseTrainingMethod
from hfprune.study.sparse.search import SearchCandidate

SEARCH, DENSE = "search", "dense"  # the settings of search candidates and of the dense reference


@dataclass(frozen=True)
class SearchTrial:
    """One candidate of the combinatorial search, trained under its fixed support."""

    search: SearchCandidate
    setting: str = SEARCH

    @property
    def mask_id(self) -> str:
        return self.search.mask_id

    def facts(self) -> dict[str, Any]:
        return {"kind": "search", "method": SEARCH, "phase": self.search.phase, "widths": list(self.search.widths),
                "budget": self.search.nonzeros}


@dataclass(frozen=True)
class MethodTrial:
    """A pruning method that ends with ``budget`` nonzero weights."""

    method: SparseTrainingMethod
    budget: int

    @property
    def setting(self) -> str:
        return self.method.label

    @property
    def mask_id(self) -> str:
        return f"nnz{self.budget}"

    def facts(self) -> dict[str, Any]:
        return {"kind": "method", "method": self.method.name, "method_options": self.method.options(),
                "at_initialisation": self.method.at_initialisation, "budget": self.budget}


@dataclass(frozen=True)
class DenseTrial:
    """The unpruned model, trained the same way: the accuracy every sparse model is compared with."""

    total: int
    setting: str = DENSE
    mask_id: str = "full"

    def facts(self) -> dict[str, Any]:
        return {"kind": DENSE, "method": DENSE, "budget": self.total}
