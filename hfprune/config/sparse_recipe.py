"""The recipe of a sparse-training study ("Sparsest Models Elude Pruning", STUDY §5b): one YAML document with a
``sparse`` section instead of ``pruning`` / ``retrain``.

Every model of such a study starts from the same seeded initialisation (per repeat) and trains once with the
``training`` section: the combinatorial search's candidates under their fixed masks, each pruning method on its
own way to a budget of nonzero weights.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from hfprune.config.recipe import (DataSection, EvaluationSection, ExecutionSection, ModelSection, ReportSection,
                                   TrainingSection)
from hfprune.config.schema import Section
from hfprune.pruning.sparse_training.registry import SparseMethodEntry

SEARCH_LAYERS = 3  # the search's MLP: 2 -> d1 -> d2 -> d3 -> 1 (the paper's four-layer MLP)
DEFAULT_HIDDEN = [16, 16, 16]


class WidthRange(Section):
    """Phase 1 of the search: every tuple of active hidden widths, each in [low, high]."""

    low: int = Field(1, ge=1, description="smallest active width of a hidden layer")
    high: int = Field(16, ge=1, description="largest active width of a hidden layer (at most the model's width)")

    @model_validator(mode="after")
    def _ordered(self) -> "WidthRange":
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be at least low ({self.low})")
        return self


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

    @field_validator("widths")
    @classmethod
    def _positive(cls, widths):
        if isinstance(widths, list) and (len(widths) != SEARCH_LAYERS or min(widths) < 1):
            raise ValueError(f"give {SEARCH_LAYERS} positive widths, e.g. [3, 3, 3], or auto; got {widths}")
        return widths


class SearchSection(Section):
    phase1: Optional[WidthRange] = Field(None, description="structured phase: active widths per hidden layer")
    phase2: Optional[Phase2Section] = Field(None, description="unstructured phase: supports within fixed widths")

    @model_validator(mode="after")
    def _some_phase(self) -> "SearchSection":
        if self.phase1 is None and self.phase2 is None:
            raise ValueError("give search.phase1 (active widths) and/or search.phase2 (supports), or drop search")
        if self.phase2 is not None and self.phase2.widths == "auto" and self.phase1 is None:
            raise ValueError("search.phase2.widths: auto picks widths from phase 1; give search.phase1 or "
                             "explicit widths such as [3, 3, 3]")
        return self


class SparseSection(Section):
    budgets: list[int] = Field(description="nonzero weights (biases not counted) every method ends with, and the "
                                           "search's default budgets")
    methods: list[SparseMethodEntry] = Field(
        default_factory=list, description="pruning baselines, one trial per budget (`hfprune methods` lists them): "
                                          "a name (snip) or a mapping of the name and its options")
    search: Optional[SearchSection] = Field(None, description="the combinatorial search (the ideal sparse models)")
    repeats: int = Field(1, gt=0, le=1000, description="initialisations (seeds) per candidate and method")
    checkpoints: Literal["all", "none"] = Field(
        "all", description="save every trained model under checkpoints/ (for `hfprune diagnose STUDY --trial ID`), "
                           "or none")

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, budgets: list[int]) -> list[int]:
        if not budgets or min(budgets) < 1 or len(set(budgets)) != len(budgets):
            raise ValueError(f"give distinct positive nonzero counts, e.g. [15, 20, 30]; got {budgets}")
        return sorted(budgets)

    @model_validator(mode="after")
    def _some_work(self) -> "SparseSection":
        if not self.methods and self.search is None:
            raise ValueError("give sparse.methods (pruning baselines) and/or sparse.search (the combinatorial search)")
        labels = [method.label for method in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"methods must be unique, got {labels}")
        return self


class SparseStudyRecipe(Section):
    kind: Literal["sparse"] = "sparse"  # set by the loader; tells the runner and the report which study this is
    name: str
    description: str = ""
    seed: int = Field(0, ge=0, lt=1 << 32, description="seed of every random choice (initialisations, data order)")
    model: ModelSection
    data: DataSection
    training: TrainingSection = Field(description="how every model trains (paper: SGD m0.9 wd5e-4, batch 128, "
                                                  "50 epochs)")
    sparse: SparseSection
    evaluation: EvaluationSection = EvaluationSection()
    report: ReportSection = ReportSection()
    execution: ExecutionSection = ExecutionSection()

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.model.config.get("hidden_sizes", DEFAULT_HIDDEN))

    @property
    def total_weights(self) -> int:
        sizes = [self.model.config.get("input_size", 2), *self.hidden_sizes, self.model.config.get("num_outputs", 1)]
        return sum(a * b for a, b in zip(sizes, sizes[1:]))

    @model_validator(mode="after")
    def _fits_model(self) -> "SparseStudyRecipe":
        from hfprune.models import FAMILIES

        if FAMILIES[self.model.family].structure != "sparse":
            raise ValueError(f"a sparse section trains model.family sparse_mlp, not '{self.model.family}'")
        too_big = [budget for budget in self.sparse.budgets if budget >= self.total_weights]
        if too_big:
            raise ValueError(f"sparse.budgets {too_big} are not below the model's {self.total_weights} weights "
                             f"(hidden_sizes {self.hidden_sizes})")
        search = self.sparse.search
        if search is not None:
            hidden = self.hidden_sizes
            if len(hidden) != SEARCH_LAYERS:
                raise ValueError(f"the search runs on {SEARCH_LAYERS} hidden layers; model.config.hidden_sizes is "
                                 f"{hidden}")
            if search.phase1 is not None and search.phase1.high > min(hidden):
                raise ValueError(f"search.phase1.high ({search.phase1.high}) exceeds the model's width {min(hidden)}")
            widths = search.phase2.widths if search.phase2 is not None else "auto"
            if widths != "auto" and any(w > h for w, h in zip(widths, hidden)):
                raise ValueError(f"search.phase2.widths {widths} exceed the model's hidden_sizes {hidden}")
        return self

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not the name, description, report or where trials run)."""
        payload = self.model_dump(mode="json", exclude={"name": True, "description": True, "report": True,
                                                       "execution": True, "sparse": {"checkpoints"}})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
