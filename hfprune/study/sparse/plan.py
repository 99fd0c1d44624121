"""A sparse study's plan in pure Python (no torch): the search's recipe sections, the trials a recipe asks for
(counted by part, never listed), and ``hfprune run``'s refusal of a study beyond ``execution.max_trials`` from its
recipe document alone, before the engine (torch, transformers) is imported.

The engine counts with the same functions (:meth:`hfprune.study.sparse.kind.SparseKind.check`), so the count a
refusal prints is the one the engine would print.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Protocol, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hfprune.config.schema import Section
from hfprune.errors import HfpruneError
from hfprune.study.cost import Cost, guard
from hfprune.study.recipe import ExecutionSection, StudyRecipe, SweepSchedule, SweepSection
from hfprune.study.sparse.space import count_phase1, count_phase2
from hfprune.study.sweep import Variant, runs, variants

SEARCH_LAYERS = 3  # the search's MLP: 2 -> d1 -> d2 -> d3 -> 1 (the paper's four-layer MLP)
SECTIONS = ("sparse", "training")  # a sparse recipe's own top-level sections (the rest are every study kind's)


class WidthRange(Section):
    """Phase 1 of the search: every tuple of active hidden widths, each in [low, high]."""

    low: int = Field(1, ge=1, description="smallest active width of a hidden layer")
    high: int = Field(16, ge=1, description="largest active width of a hidden layer (at most the model's width)")
    max_model_nonzeros: Optional[int] = Field(
        None, gt=0, description="only width tuples with at most this many nonzero weights + active biases (the "
                                "reference's Model NNZ: its fixed-initialisation searches keep those below their "
                                "bench, 36 for (3, 3, 3))")

    @model_validator(mode="after")
    def _ordered(self) -> "WidthRange":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be at least low ({self.low})")
        return self


class SearchSweep(Section):
    """The search's own grid axes (the paper sweeps the search over fewer learning rates than the methods)."""

    lr: Optional[list[float]] = Field(None, description="learning rates of the search [default: sweep.lr]")
    schedule: Optional[list[SweepSchedule]] = Field(None, description="schedules [default: sweep.schedule]")
    epochs: Optional[list[int]] = Field(None, description="epochs [default: sweep.epochs]")
    runs: Optional[int] = Field(None, gt=0, le=1000, description="runs of every point [default: sweep.runs; the "
                                                                 "reference searches once per point]")


class Phase2Section(Section):
    """Phase 2 of the search: every valid support of each layer within fixed active widths."""

    widths: Union[Literal["auto"], list[int]] = Field(
        "auto", description="active hidden widths, e.g. [3, 3, 3]; auto: phase 1's widths with the fewest nonzeros "
                            "that reach target_acc (needs phase1)")
    target_acc: float = Field(0.95, gt=0, le=1, description="auto widths: the accuracy phase 1 must reach "
                                                            "(paper: 0.95 and 0.995)")
    budgets: Optional[list[int]] = Field(
        None, description="total nonzero weights to search [default: sparse.budgets]; all counts when empty list")
    per_budget_limit: Optional[int] = Field(
        None, gt=0, description="at most this many supports per nonzero count, a seeded uniform subset (quick runs); "
                                "none: every support")
    max_nonzeros: Optional[int] = Field(
        None, gt=0, description="only candidates with at most this many nonzero weights (the reference's 99.5% "
                                "search at (7, 3, 3): fewer than 33 in the three searched layers, i.e. 35)")
    support_limits: Optional[list[Optional[int]]] = Field(
        None, description="per searched layer, only the first k supports of each nonzero count (null: all); the "
                          "reference's 99.5% search: [null, 3, null]")
    sweep: Optional[SearchSweep] = Field(None, description="phase 2's grid axes where they differ from the search's "
                                                           "(the reference's 99.5% phase 2: lr 0.05 only)")

    @field_validator("support_limits")
    @classmethod
    def _limits(cls, limits):
        if limits is not None and (len(limits) != SEARCH_LAYERS or any(k is not None and k < 1 for k in limits)):
            raise ValueError(f"give {SEARCH_LAYERS} limits (positive or null), e.g. [null, 3, null]; got {limits}")
        return limits

    @field_validator("widths")
    @classmethod
    def _positive(cls, widths):
        if isinstance(widths, list) and (len(widths) != SEARCH_LAYERS or min(widths) < 1):
            raise ValueError(f"give {SEARCH_LAYERS} positive widths, e.g. [3, 3, 3], or auto; got {widths}")
        return widths


class SearchSection(Section):
    phase1: Optional[WidthRange] = Field(None, description="structured phase: active widths per hidden layer")
    phase2: Optional[Phase2Section] = Field(None, description="unstructured phase: supports within fixed widths")
    sweep: Optional[SearchSweep] = Field(None, description="the search's grid axes where they differ from the "
                                                           "recipe's sweep (paper: lr 0.05, 0.1 for the search)")

    @model_validator(mode="after")
    def _some_phase(self) -> "SearchSection":
        if self.phase1 is None and self.phase2 is None:
            raise ValueError("give search.phase1 (active widths) and/or search.phase2 (supports), or drop search")
        if self.phase2 is not None and self.phase2.widths == "auto" and self.phase1 is None:
            raise ValueError("search.phase2.widths: auto picks widths from phase 1; give search.phase1 or "
                             "explicit widths such as [3, 3, 3]")
        return self


class Counted(Protocol):
    """What of a recipe's ``sparse`` section the count reads."""

    budgets: list[int]
    methods: Sequence[Any]
    search: SearchSection | None
    repeats: int


def _search_sweeps(search: SearchSection | None, phase: int) -> list[SearchSweep]:
    """The search's own sweep axes for ``phase``, the more particular last (phase 2's over the search's)."""
    if search is None:
        return []
    parts = [search.sweep] + ([search.phase2.sweep] if phase == 2 and search.phase2 is not None else [])
    return [part for part in parts if part is not None]


def search_variants(sweep: SweepSection | None, search: SearchSection | None, phase: int = 1) -> list[Variant]:
    """The search's sweep points in ``phase``: the recipe's grid with the search's own axes in place of its."""
    own = {name: getattr(part, name) for part in _search_sweeps(search, phase)
           for name in ("lr", "schedule", "epochs") if getattr(part, name) is not None}
    return variants(sweep) if sweep is None or not own else variants(sweep.model_copy(update=own))


def search_runs(sweep: SweepSection | None, search: SearchSection | None, repeats: int, phase: int = 1) -> int:
    """Runs of every search point in ``phase``: the search's own, else the recipe's (``repeats`` without a sweep)."""
    own = [part.runs for part in _search_sweeps(search, phase) if part.runs is not None]
    return own[-1] if own else runs(sweep, repeats)


def phase2_space(sparse: Counted, widths: tuple[int, ...]) -> dict[str, Any]:
    """The arguments of phase 2's candidates (and of their count) at ``widths``."""
    phase2 = sparse.search.phase2
    budgets = sparse.budgets if phase2.budgets is None else (phase2.budgets or None)
    return {"widths": widths, "budgets": budgets, "per_budget_limit": phase2.per_budget_limit,
            "max_nonzeros": phase2.max_nonzeros, "support_limits": phase2.support_limits}


def phase2_trials(sparse: Counted, sweep: SweepSection | None, widths: tuple[int, ...]) -> int:
    """Phase 2's trials at ``widths``: its candidates (counted by formula) × the search's phase-2 points × runs."""
    search = sparse.search
    points = len(search_variants(sweep, search, 2)) * search_runs(sweep, search, sparse.repeats, 2)
    return count_phase2(**phase2_space(sparse, widths)) * points


def count_trials(sparse: Counted, sweep: SweepSection | None, structured: int = 0) -> tuple[dict[str, int], list[str]]:
    """Trials per part, counted and never listed, and what is counted only later (phase 2 at auto widths);
    ``structured``: the structured masks, which the engine counts once it has built the model (0 before)."""
    search, per = sparse.search, len(variants(sweep)) * runs(sweep, sparse.repeats)
    phase1 = None if search is None else search.phase1
    searched = 0 if phase1 is None else count_phase1(range(phase1.low, phase1.high + 1), SEARCH_LAYERS,
                                                     phase1.max_model_nonzeros)
    per_search = len(search_variants(sweep, search)) * search_runs(sweep, search, sparse.repeats)
    parts = {"dense": per, "search phase 1": searched * per_search, "structured": structured * per,
             "methods": len(sparse.methods) * len(sparse.budgets) * per}
    pending = []
    if search is not None and search.phase2 is not None:
        if search.phase2.widths == "auto":
            pending.append("search phase 2: counted when phase 1 has chosen its widths")
        else:
            parts["search phase 2"] = phase2_trials(sparse, sweep, tuple(search.phase2.widths))
    return parts, pending


class _CountedSparse(BaseModel):
    """The parts of a ``sparse`` section the count reads, validated alone (the engine validates the rest)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    budgets: list[int] = Field(default_factory=list)
    methods: list[Any] = Field(default_factory=list)
    search: Optional[SearchSection] = None
    repeats: int = 1


class _CountedRecipe(BaseModel):
    """The parts of a sparse recipe the count and the refusal read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    execution: ExecutionSection = ExecutionSection()
    sweep: Optional[SweepSection] = None
    sparse: _CountedSparse


def refuse_before_the_engine(document: Any, go_on: bool = False) -> None:
    """Refuse a sparse study of more trials than its ``execution.max_trials`` (unless ``go_on``: ``hfprune run
    --yes``) from its recipe document alone, with the count and the refusal the engine would print, before torch
    is imported. Anything else is left to the engine: a document that is not plainly a sparse recipe, or whose
    counted sections do not validate, and the validation of the sections the count does not read."""
    if go_on or not isinstance(document, dict) or document.get("kind", "sparse") != "sparse" \
            or "sparse" not in document or not set(document) <= set(StudyRecipe.model_fields) | set(SECTIONS):
        return
    try:
        recipe = _CountedRecipe.model_validate(document)
        parts, pending = count_trials(recipe.sparse, recipe.sweep)
    except (ValidationError, HfpruneError):
        return
    cost = Cost(parts, None, pending)
    if cost.beyond(recipe.execution.max_trials):
        guard(cost, recipe.name, recipe.execution.max_trials, go_on)
