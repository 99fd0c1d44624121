"""Unstructured methods: each one class that owns its options, registered in :mod:`.registry`.

A method is a pydantic model of its own knobs (as llm-compressor's modifiers are); it says how it scores the
weights it prunes (:mod:`.scores`) and how it spreads the sparsity over layers (:mod:`.allocation`), and
:meth:`UnstructuredMethod.masks` does the rest: select the targets, bind the scores once, allocate the budgets,
and prune exactly the lowest-scoring weights of every budget
(:func:`~hfprune.pruning.unstructured.selection.prune_smallest`). The paper's four are magnitude rules:

- ``ump`` — uniform magnitude: every target Linear at the same ratio S;
- ``gmp`` — global magnitude: one budget round(S·N) over all targets together (one global |w| threshold);
- ``onp`` — outlier-based non-uniform: per decoder layer from its outlier ratio (OWL), spread over [S−λ, S+λ];
- ``pnp`` — PCA-based non-uniform: per decoder layer from its PCA share, spread over [S−λ, S+λ].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Optional

import torch
from pydantic import Field, field_validator
from torch import nn

from hfprune.config.schema import Section, one_of
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.unstructured.allocation import (
    Allocation,
    Global,
    OutlierProfile,
    PcaProfile,
    Uniform,
    progress_over,
)
from hfprune.pruning.unstructured.scores import SCORES, Magnitude, Scoring, WeightScore
from hfprune.pruning.unstructured.selection import prune_smallest
from hfprune.pruning.unstructured.targets import select_targets

LAMBDA = Field(0.08, ge=0, lt=1, description="layer sparsities spread over [S - lam, S + lam]")


@dataclass
class UnstructuredResult:
    """Masks keyed by parameter name (True = kept, on CPU) and how the method allocated them."""

    method: str
    sparsity: float
    masks: dict[str, torch.Tensor]
    layer_ratios: dict[str, float]      # target module name → the sparsity it was given (GMP: achieved)
    group_scores: dict[str, float]      # ONP: outlier ratio D_l, PNP: PCA share, per decoder layer
    threshold: float | None = None      # the k-th smallest score when one budget spans every target (GMP)

    @property
    def total(self) -> int:
        return sum(mask.numel() for mask in self.masks.values())

    @property
    def pruned(self) -> int:
        return sum(mask.numel() - int(torch.count_nonzero(mask)) for mask in self.masks.values())

    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights of ``model`` in place."""
        MaskedParameters(model, self.masks).apply()


class UnstructuredMethod(Section):
    """A registered unstructured method: its options, its scores and its allocation of the sparsity."""

    name: str
    label: Optional[str] = Field(None, description="the method's name in a study, i.e. its trials' mask id "
                                                   "[default: name]; tells two settings of one method apart")

    @property
    def mask_id(self) -> str:
        return self.label or self.name

    def allocation(self) -> Allocation:
        """How the sparsity is spread over the targets."""
        raise NotImplementedError

    def pruning_score(self) -> WeightScore:
        """What decides which weights go inside a budget (magnitude unless a method says otherwise)."""
        return SCORES["weight"]

    def scores(self) -> list[WeightScore]:
        """Every score the method uses (its allocation's too)."""
        used = [self.pruning_score()]
        profile_score = getattr(self.allocation(), "score", None)
        return used + ([profile_score] if profile_score is not None else [])

    @property
    def needs_calibration(self) -> bool:
        return any(score.needs_calibration for score in self.scores())

    def options(self) -> dict:
        """The method's own knobs (what a record and a model card say about it)."""
        return self.model_dump(exclude={"name", "label"})

    @torch.no_grad()
    def masks(self, model: nn.Module, sparsity: float, *, targets: str | Iterable[str] | None = None,
              ignore: str | Iterable[str] = (), calibration: Iterable[Mapping] | None = None,
              progress: bool = False) -> UnstructuredResult:
        """Masks that prune ``sparsity`` of the target Linears' weights (the model is not modified)."""
        linears = select_targets(model, targets, ignore)
        scoring = Scoring(model, linears, calibration)
        allocated = self.allocation().allocate(linears, sparsity, scoring, progress)
        score = self.pruning_score()
        bound = scoring(score)
        masks: dict[str, torch.Tensor] = {}
        threshold = None
        for budget in progress_over(allocated.budgets, f"{self.name} masks", progress):
            # Magnitude selects on the weights themselves: no float copy of a whole model's weights.
            values = [linears[name].weight if isinstance(score, Magnitude) else bound(name, linears[name])
                      for name in budget.names]
            selection = prune_smallest(values, budget.count)
            masks.update((f"{name}.weight", mask) for name, mask in zip(budget.names, selection.masks))
            if len(budget.names) == len(linears) and selection.threshold is not None:
                threshold = selection.threshold.value
        ratios = allocated.layer_ratios
        if ratios is None:
            ratios = {name: 1 - int(torch.count_nonzero(masks[f"{name}.weight"])) / linear.weight.numel()
                      for name, linear in linears.items()}
        return UnstructuredResult(self.name, float(sparsity), masks, ratios, allocated.group_scores, threshold)


class UniformMagnitude(UnstructuredMethod):
    name: Literal["ump"] = "ump"

    def allocation(self) -> Allocation:
        return Uniform()


class GlobalMagnitude(UnstructuredMethod):
    name: Literal["gmp"] = "gmp"

    def allocation(self) -> Allocation:
        return Global()


class OutlierNonUniform(UnstructuredMethod):
    name: Literal["onp"] = "onp"
    outlier_m: float = Field(5.0, gt=0, description="a weight is an outlier when its score > M x its layer's mean")
    lam: float = LAMBDA
    score: str = Field("weight", description="outlier score: 'weight' (|w|, the paper's reading) or 'activation' "
                                             "(OWL's |w| * ||x||_2 over the calibration samples)")

    @field_validator("score")
    @classmethod
    def _known_score(cls, score: str) -> str:
        return one_of(score, SCORES, "score")

    def allocation(self) -> Allocation:
        return OutlierProfile(lam=self.lam, outlier_m=self.outlier_m, score=SCORES[self.score])


class PcaNonUniform(UnstructuredMethod):
    name: Literal["pnp"] = "pnp"
    variance: float = Field(0.9, gt=0, le=1, description="share of a weight matrix's variance to explain")
    lam: float = LAMBDA

    def allocation(self) -> Allocation:
        return PcaProfile(lam=self.lam, variance=self.variance)
