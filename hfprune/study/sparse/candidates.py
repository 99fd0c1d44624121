"""What one trial of a sparse study trains: a candidate under a fixed mask (a search candidate, or a structured
mask of the family's groups), a pruning method at a budget, or the dense model (the reference point)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hfprune.pruning.sparse_training.base import SparseTrainingMethod
from hfprune.pruning.structured.groups import Group, parameter_masks
from hfprune.pruning.structured.samplers import MaskCandidate
from hfprune.study.sparse.search import SearchCandidate

SEARCH, DENSE = "search", "dense"  # the settings of search candidates and of the dense reference


class MaskTrial:
    """A candidate trained from initialisation under a fixed mask (its ``masks(model)``)."""

    def masks(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Parameter masks (True = kept) on ``model``."""
        raise NotImplementedError


@dataclass(frozen=True)
class SearchTrial(MaskTrial):
    """One candidate of the combinatorial search, trained under its fixed support."""

    search: SearchCandidate
    setting: str = SEARCH

    @property
    def mask_id(self) -> str:
        return self.search.mask_id

    def masks(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return self.search.masks(model)

    def facts(self) -> dict[str, Any]:
        return {"kind": "search", "method": SEARCH, "phase": self.search.phase, "widths": list(self.search.widths),
                "budget": self.search.nonzeros}


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: it holds the groups (a dict)
class StructuredTrial(MaskTrial):
    """A structured mask of the family's groups (an oracle study's candidate), trained from initialisation;
    ``kept`` is the number of prunable weights it keeps (its budget)."""

    candidate: MaskCandidate
    groups: dict[str, Group]
    kept: int

    @property
    def setting(self) -> str:
        return self.candidate.setting

    @property
    def mask_id(self) -> str:
        return self.candidate.mask_id

    def masks(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return parameter_masks(self.groups, self.candidate.mask, dict(model.named_parameters()))

    def facts(self) -> dict[str, Any]:
        return {"kind": "structured", "method": self.candidate.setting, **self.candidate.facts(),
                "budget": self.kept}


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

    def target(self, final_count: str = "exact") -> int:
        """The nonzero weights it ends with: the budget, or (``reference``) as many as the reference code's
        thresholds leave."""
        return self.budget - (self.method.reference_shortfall if final_count == "reference" else 0)

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
