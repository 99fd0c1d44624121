"""Unstructured methods: each one class that owns its options, registered in :mod:`.registry`.

A method is a pydantic model of its own knobs (as llm-compressor's modifiers are). A :class:`ScoredMethod` is a
*score* (:mod:`.scores`: which weights matter), an *allocation* (:mod:`.allocation`: how the sparsity is spread
over layers) and a *granularity* (:mod:`.granularity`: which weights compete — the whole budget, each output row,
or N:M groups), any of which composes with the others; its activation scores come from one pass of the dense
model or, ``sequential``, decoder layer after decoder layer (:mod:`.calibration`). The registered ones:

- ``ump`` — uniform magnitude: every target Linear at the same ratio S;
- ``gmp`` — global magnitude: one budget round(S·N) over all targets together (one global threshold);
- ``onp`` — outlier-based non-uniform: per decoder layer from its outlier ratio (OWL), spread over [S−λ, S+λ];
- ``pnp`` — PCA-based non-uniform: per decoder layer from its PCA share, spread over [S−λ, S+λ];
- ``wanda`` — |w|·‖x‖₂ compared within each output row, layers calibrated in order (Sun et al., 2023);
- ``owl`` — OWL over Wanda: the outlier profile of |w|·‖x‖₂, then Wanda inside each layer (Yin et al., 2024);
- ``sparsegpt`` — OBS reconstruction with weight updates (:mod:`.sparsegpt`; Frantar & Alistarh, 2023).

The paper's four default to magnitude scores compared over whole Linears; their ``prune_score``,
``granularity`` and ``sequential`` options give every other combination (e.g. GMP over Wanda's score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Iterable, Literal, Mapping, Optional

import torch
from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from torch import nn

from hfprune.config.schema import Section, one_of
from hfprune.errors import HfpruneError
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.unstructured.allocation import (
    Allocation,
    Budget,
    Global,
    LayerRatios,
    OutlierProfile,
    PcaProfile,
    Uniform,
    progress_over,
)
from hfprune.pruning.unstructured.calibration import prune_layer_by_layer, reiterable
from hfprune.pruning.unstructured.granularity import (
    GRANULARITY_HELP,
    Granularity,
    checked_granularity,
    granularity_text,
    parse_granularity,
)
from hfprune.pruning.unstructured.scores import SCORES, Magnitude, ScoreFn, Scoring, WeightScore
from hfprune.pruning.unstructured.radix import LazyScores
from hfprune.pruning.unstructured.targets import select_targets

LAMBDA = Field(0.08, ge=0, lt=1, description="layer sparsities spread over [S - lam, S + lam]")
ScoreName = Annotated[str, AfterValidator(lambda score: one_of(score, SCORES, "score"))]
GranularityText = Annotated[str, BeforeValidator(granularity_text), AfterValidator(checked_granularity)]


def prune_score_field(default: str):
    return Field(default, description="what decides which weights go inside a budget: 'weight' (|w|) or "
                                      "'activation' (|w| * ||x||_2 over the calibration samples, Wanda's score)")


def granularity_field(default: str):
    return Field(default, description=GRANULARITY_HELP)


def sequential_field(default: bool):
    return Field(default, description="activation scores layer by layer: each decoder layer's from the inputs "
                                      "that the already-pruned layers before it produce (Wanda's and SparseGPT's "
                                      "procedure); false: from one pass of the dense model")


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
    """A registered unstructured method: its options and how it turns a model into masks."""

    name: str
    label: Optional[str] = Field(None, description="the method's name in a study, i.e. its trials' mask id "
                                                   "[default: name]; tells two settings of one method apart")

    # Whether masks() also writes new values into the kept target weights (SparseGPT's reconstruction); every
    # other method leaves the model as it is.
    updates_weights: ClassVar[bool] = False

    @property
    def mask_id(self) -> str:
        return self.label or self.name

    @property
    def needs_calibration(self) -> bool:
        return False

    @property
    def pattern(self) -> str | None:
        """The N:M pattern of the masks (e.g. ``"2:4"``), or None."""
        return None

    def sparsity_problem(self, sparsity: float) -> str | None:
        """Why the method cannot prune at ``sparsity`` (an N:M pattern fixes it), or None."""
        return None

    def check_sparsity(self, sparsity: float) -> None:
        """An HfpruneError when :meth:`sparsity_problem` finds one."""
        problem = self.sparsity_problem(sparsity)
        if problem:
            raise HfpruneError(problem)

    def options(self) -> dict:
        """The method's own knobs (what a record and a model card say about it)."""
        return self.model_dump(exclude={"name", "label"})

    def masks(self, model: nn.Module, sparsity: float, *, targets: str | Iterable[str] | None = None,
              ignore: str | Iterable[str] = (), calibration: Iterable[Mapping] | None = None,
              progress: bool = False) -> UnstructuredResult:
        """Masks that prune ``sparsity`` of the target Linears' weights (the model is not modified, except for
        the kept weights of a method that ``updates_weights``)."""
        raise NotImplementedError


class ScoredMethod(UnstructuredMethod):
    """A score × an allocation × a granularity: inside every budget of the allocation, the lowest-scoring
    weights go (:func:`~hfprune.pruning.unstructured.radix.prune_smallest` over whole budgets)."""

    prune_score: ScoreName = prune_score_field("weight")
    granularity: GranularityText = granularity_field("layer")
    sequential: bool = sequential_field(False)

    def allocation(self) -> Allocation:
        """How the sparsity is spread over the targets."""
        raise NotImplementedError

    def pruning_score(self) -> WeightScore:
        """What decides which weights go inside a budget."""
        return SCORES[self.prune_score]

    def comparison(self) -> Granularity:
        return parse_granularity(self.granularity)

    def scores(self) -> list[WeightScore]:
        """Every score the method uses (its allocation's too)."""
        used = [self.pruning_score()]
        profile_score = getattr(self.allocation(), "score", None)
        return used + ([profile_score] if profile_score is not None else [])

    @property
    def needs_calibration(self) -> bool:
        return any(score.needs_calibration for score in self.scores())

    @property
    def layer_by_layer(self) -> bool:
        """Whether the pruning score is calibrated decoder layer after decoder layer."""
        return self.sequential and self.pruning_score().needs_calibration

    @property
    def pattern(self) -> str | None:
        return self.comparison().pattern

    def sparsity_problem(self, sparsity: float) -> str | None:
        return self.comparison().sparsity_problem(sparsity)

    @model_validator(mode="after")
    def _parts_compose(self) -> "ScoredMethod":
        allocation, comparison = self.allocation(), self.comparison()
        if comparison.per_linear and not isinstance(allocation, LayerRatios):
            raise ValueError(f"granularity '{self.granularity}' compares weights inside one Linear, but {self.name} "
                             "prunes one budget over every target: use granularity 'layer'")
        if comparison.pattern and not isinstance(allocation, Uniform):
            raise ValueError(f"pattern {comparison.pattern} gives every Linear the same sparsity, which "
                             f"{self.name}'s allocation varies: use a uniform method (ump, wanda)")
        if self.layer_by_layer and not isinstance(allocation, LayerRatios):
            raise ValueError(f"sequential scores prune each decoder layer before the next is scored, but {self.name} "
                             "needs every score at once: set sequential false")
        return self

    @torch.no_grad()
    def masks(self, model, sparsity, *, targets=None, ignore=(), calibration=None, progress=False):
        """Masks that prune ``sparsity`` of the target Linears' weights (the model is not modified)."""
        linears = select_targets(model, targets, ignore)
        self.check_sparsity(sparsity)
        if self.needs_calibration and calibration is None:
            raise HfpruneError(f"{self.name} with these options needs calibration batches (calibration=...)")
        calibration = reiterable(calibration)
        scoring = Scoring(model, linears, calibration)
        allocated = self.allocation().allocate(linears, sparsity, scoring, progress)
        score, comparison = self.pruning_score(), self.comparison()

        threshold = None

        def select(budget: Budget, bound: ScoreFn) -> dict[str, torch.Tensor]:
            nonlocal threshold
            # Magnitude selects on the weights themselves; other scores are computed one Linear at a time.
            values = [linears[name].weight if isinstance(score, Magnitude)
                      else bound(name, linears[name]) if len(budget.names) == 1
                      else LazyScores(linears[name].weight.shape, lambda name=name: bound(name, linears[name]))
                      for name in budget.names]
            selection = comparison.select(values, budget.count, budget.ratio)
            if len(budget.names) == len(linears) and selection.threshold is not None:
                threshold = selection.threshold.value
            return dict(zip(budget.names, selection.masks))

        if self.layer_by_layer:
            budgets = {budget.names[0]: budget for budget in allocated.budgets}

            def prune_layer(layer: dict[str, nn.Linear], stats: dict) -> dict[str, torch.Tensor]:
                bound = score.from_statistics(stats)
                return {name: mask for target in layer for name, mask in select(budgets[target], bound).items()}

            chosen = prune_layer_by_layer(model, linears, calibration, score.statistic, prune_layer, progress)
        else:
            bound, chosen = scoring(score), {}
            for budget in progress_over(allocated.budgets, f"{self.name} masks", progress):
                chosen.update(select(budget, bound))
        masks = {f"{name}.weight": chosen[name] for name in linears}
        ratios = allocated.layer_ratios
        if ratios is None:
            ratios = {name: 1 - int(torch.count_nonzero(masks[f"{name}.weight"])) / linear.weight.numel()
                      for name, linear in linears.items()}
        return UnstructuredResult(self.name, float(sparsity), masks, ratios, allocated.group_scores, threshold)


class UniformMagnitude(ScoredMethod):
    name: Literal["ump"] = "ump"

    def allocation(self) -> Allocation:
        return Uniform()


class GlobalMagnitude(ScoredMethod):
    name: Literal["gmp"] = "gmp"

    def allocation(self) -> Allocation:
        return Global()


class _SpreadWithinRange:
    """Refuses a ``lam`` that spreads layer sparsities past 0 or 1 (they would be clipped, moving the mean)."""

    def sparsity_problem(self, sparsity: float) -> str | None:
        room = min(sparsity, 1 - sparsity)
        if self.lam > room + 1e-12:
            return (f"lam {self.lam:g} spreads layer sparsities over [{sparsity - self.lam:g}, "
                    f"{sparsity + self.lam:g}], outside [0, 1]; at sparsity {sparsity:g} use lam <= {room:g}")
        return super().sparsity_problem(sparsity)


class OutlierNonUniform(_SpreadWithinRange, ScoredMethod):
    name: Literal["onp"] = "onp"
    outlier_m: float = Field(5.0, gt=0, description="a weight is an outlier when its score > M x its layer's mean")
    lam: float = LAMBDA
    score: ScoreName = Field("weight", description="outlier score: 'weight' (|w|, the paper's reading) or "
                                                   "'activation' (OWL's |w| * ||x||_2 over the calibration samples)")

    def allocation(self) -> Allocation:
        return OutlierProfile(lam=self.lam, outlier_m=self.outlier_m, score=SCORES[self.score])


class PcaNonUniform(_SpreadWithinRange, ScoredMethod):
    name: Literal["pnp"] = "pnp"
    variance: float = Field(0.9, gt=0, le=1, description="share of a weight matrix's variance to explain")
    lam: float = LAMBDA

    def allocation(self) -> Allocation:
        return PcaProfile(lam=self.lam, variance=self.variance)


class Wanda(ScoredMethod):
    """Wanda (Sun et al., 2023): |w_ij|·‖x_j‖₂, the lowest share of every output row pruned, decoder layers
    calibrated in order on the inputs of the already-pruned layers before them; no weight update."""

    name: Literal["wanda"] = "wanda"
    prune_score: ScoreName = prune_score_field("activation")
    granularity: GranularityText = granularity_field("row")
    sequential: bool = sequential_field(True)

    def allocation(self) -> Allocation:
        return Uniform()


class OwlWanda(OutlierNonUniform):
    """OWL (Yin et al., 2024) as its reference code runs it: layer sparsities from the outlier ratios of Wanda's
    score on the dense model, then Wanda inside every layer at its sparsity."""

    name: Literal["owl"] = "owl"
    score: ScoreName = Field("activation", description="outlier score: 'activation' (OWL's |w| * ||x||_2) or "
                                                       "'weight' (|w|)")
    prune_score: ScoreName = prune_score_field("activation")
    granularity: GranularityText = granularity_field("row")
    sequential: bool = sequential_field(True)
