"""The recipe of a sparse-training study ("Sparsest Models Elude Pruning", STUDY §5b): one YAML document with a
``sparse`` section and a ``training`` section instead of ``pruning`` / ``retrain``.

Every model of such a study starts from the same seeded initialisation (per repeat) and trains once with the
``training`` section: each pruning method on its own way to a budget of nonzero weights, structured masks of the
family's groups (the oracle study's candidates) and, for MLP families, the combinatorial search's candidates
under their fixed masks. Any family and dataset hfprune has can run one.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from hfprune.config.schema import Section
from hfprune.models import FAMILIES, StructuredAdapter
from hfprune.pruning.sparse_training.registry import SparseMethodEntry
from hfprune.study.recipe import MaskSetting, StudyRecipe
from hfprune.train.sections import TrainingSection

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
    budgets: list[int] = Field(default_factory=list, description="nonzero weights (biases not counted) every method "
                                                                 "ends with, and the search's default budgets")
    methods: list[SparseMethodEntry] = Field(
        default_factory=list, description="pruning baselines, one trial per budget (`hfprune methods` lists them): "
                                          "a name (snip) or a mapping of the name and its options")
    search: Optional[SearchSection] = Field(None, description="the combinatorial search (the ideal sparse models; "
                                                              "MLP families)")
    structured: list[MaskSetting] = Field(
        default_factory=list, description="structured masks of the family's groups (an oracle study's settings, "
                                          "e.g. {ratios: {conv1: 0.5}, candidates: {mode: random, num: 4}}), each "
                                          "trained from the same initialisation under its fixed mask, at its own "
                                          "count of kept weights")
    repeats: int = Field(1, gt=0, le=1000, description="initialisations (seeds) per candidate and method")
    checkpoints: Literal["all", "none"] = Field(
        "all", description="save every trained model under checkpoints/ (for `hfprune diagnose STUDY --trial ID`), "
                           "or none")

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, budgets: list[int]) -> list[int]:
        if (budgets and min(budgets) < 1) or len(set(budgets)) != len(budgets):
            raise ValueError(f"give distinct positive nonzero counts, e.g. [15, 20, 30]; got {budgets}")
        return sorted(budgets)

    @model_validator(mode="after")
    def _some_work(self) -> "SparseSection":
        if not self.methods and self.search is None and not self.structured:
            raise ValueError("give sparse.methods (pruning baselines), sparse.structured (structured masks) and/or "
                             "sparse.search (the combinatorial search)")
        if self.methods and not self.budgets:
            raise ValueError("sparse.methods need sparse.budgets: the nonzero weights each method ends with")
        labels = [method.label for method in self.methods] + [setting.label for setting in self.structured]
        if len(set(labels)) != len(labels):
            raise ValueError(f"methods and structured settings must have distinct labels, got {labels}")
        return self


class SparseRecipe(StudyRecipe):
    """A sparse-training study: methods at budgets of nonzero weights, structured masks, the combinatorial search."""

    kind: Literal["sparse"] = "sparse"
    training: TrainingSection = Field(description="how every model trains (paper: SGD m0.9 wd5e-4, batch 128, "
                                                  "50 epochs)")
    sparse: SparseSection

    @property
    def hidden_sizes(self) -> list[int]:
        """The hidden widths of an MLP family's model (the search's shapes)."""
        return list(self.model.config.get("hidden_sizes", DEFAULT_HIDDEN))

    @model_validator(mode="after")
    def _fits_model(self) -> "SparseRecipe":
        family = FAMILIES[self.model.family]
        if self.model.pretrained is not None:
            raise ValueError("model.pretrained: a sparse-training study trains every model from its seeded "
                             "initialisation; remove model.pretrained")
        search = self.sparse.search
        if search is not None:
            if not family.searchable:
                searchable = ", ".join(name for name, adapter in FAMILIES.items() if adapter.searchable)
                raise ValueError(f"sparse.search enumerates the supports of an MLP's weight matrices; model.family "
                                 f"'{self.model.family}' is not such a family ({searchable}); remove sparse.search")
            hidden = self.hidden_sizes
            if len(hidden) != SEARCH_LAYERS:
                raise ValueError(f"the search runs on {SEARCH_LAYERS} hidden layers; model.config.hidden_sizes is "
                                 f"{hidden}")
            if search.phase1 is not None and search.phase1.high > min(hidden):
                raise ValueError(f"search.phase1.high ({search.phase1.high}) exceeds the model's width {min(hidden)}")
            if search.phase2 is not None and search.phase2.budgets is None and not self.sparse.budgets:
                raise ValueError("search.phase2 searches at sparse.budgets: give sparse.budgets, or "
                                 "search.phase2.budgets ([] = every nonzero count)")
            widths = search.phase2.widths if search.phase2 is not None else "auto"
            if widths != "auto" and any(w > h for w, h in zip(widths, hidden)):
                raise ValueError(f"search.phase2.widths {widths} exceed the model's hidden_sizes {hidden}")
        if self.sparse.structured and not issubclass(family, StructuredAdapter):
            raise ValueError(f"sparse.structured draws masks of the family's groups; model.family "
                             f"'{self.model.family}' has none; remove sparse.structured")
        return self

    def fingerprint_exclude(self) -> dict:
        return {**super().fingerprint_exclude(), "sparse": {"checkpoints"}}
