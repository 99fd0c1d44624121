"""The recipe of a sparse-training study ("Sparsest Models Elude Pruning", STUDY §5b): one YAML document with a
``sparse`` section and a ``training`` section instead of ``pruning`` / ``retrain``.

Every model of such a study starts from the same seeded initialisation (per repeat) and trains once with the
``training`` section: each pruning method on its own way to a budget of nonzero weights, structured masks of the
family's groups (the oracle study's candidates) and, for MLP families, the combinatorial search's candidates
under their fixed masks. Any family and dataset hfprune has can run one. The search's sections, and the count of
a recipe's trials, are in :mod:`hfprune.study.sparse.plan` (no torch).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from hfprune.config.schema import Section
from hfprune.models import FAMILIES, StructuredAdapter
from hfprune.pruning.sparse_training.registry import SparseMethodEntry
from hfprune.study.recipe import MaskSetting, StudyRecipe
from hfprune.study.sparse.plan import SEARCH_LAYERS, SearchSection
from hfprune.study.sweep import check_runs
from hfprune.train.sections import TrainingSection

DEFAULT_HIDDEN = [16, 16, 16]


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
    repeats: int = Field(1, gt=0, le=1000, description="initialisations (seeds) per candidate and method (with a "
                                                       "sweep: sweep.runs instead)")
    final_count: Literal["exact", "reference"] = Field(
        "exact", description="nonzero weights a method ends with: exactly the budget, or as many as the reference "
                             "code's thresholds leave (gradual_magnitude budget − 2; imp, synflow, iter_snip, force "
                             "budget − 1)")
    drop_last: bool = Field(False, description="leave each epoch's last, smaller batch out, as the reference's loader "
                                               "(390 steps of 128 on 49,982 points, not 391); trains through the "
                                               "packed engine")
    init_width: Optional[int] = Field(
        None, gt=0, le=4096, description="MLP families: start every model from the top-left slice of the "
                                         "initialisation of a model of this width (the paper's optimal-width and "
                                         "optimal-initialisation runs: width 3 or 6 from a width-16 initialisation)")
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
        if self.sparse.init_width is not None:
            if not family.searchable:
                raise ValueError(f"sparse.init_width slices an MLP's initialisation; model.family "
                                 f"'{self.model.family}' is not an MLP family; remove sparse.init_width")
            if self.sparse.init_width < max(self.hidden_sizes):
                raise ValueError(f"sparse.init_width ({self.sparse.init_width}) must be at least the model's widths "
                                 f"{self.hidden_sizes}")
        sweep = self.sweep
        if sweep is not None:
            check_runs(sweep, self.sparse.repeats, "sparse.repeats")
            if sweep.applies_to != "training":
                raise ValueError("sweep.applies_to: a sparse study sweeps its training (applies_to: training)")
            if sweep.report == "each":
                raise ValueError("sweep.report: a sparse study reports each candidate's best run (report: best)")
        own = [] if search is None else [search.sweep, search.phase2.sweep if search.phase2 else None]
        if any(part is not None for part in own) and (sweep is None or sweep.points):
            raise ValueError("sparse.search.sweep and phase2.sweep replace axes of the recipe's sweep grid: give a "
                             "sweep with lr, schedule or epochs")
        return self

    def fingerprint_exclude(self) -> dict:
        return {**super().fingerprint_exclude(), "sparse": {"checkpoints"}}

    # fields added after sparse studies were run, with the value that does what those studies did
    NEW_SPARSE_DEFAULTS: ClassVar[dict] = {"final_count": "exact", "drop_last": False, "init_width": None}
    NEW_METHOD_DEFAULTS: ClassVar[dict] = {"imp": {"round_order": "same"},
                                           "rigl": {"gradient": "after_update", "reset_momentum": False}}

    def fingerprint_payload(self) -> dict:
        payload = super().fingerprint_payload()
        sparse = payload["sparse"]
        for name, default in self.NEW_SPARSE_DEFAULTS.items():
            if sparse.get(name) == default:
                sparse.pop(name, None)
        for method in sparse.get("methods", []):
            for name, default in self.NEW_METHOD_DEFAULTS.get(method.get("name"), {}).items():
                if method.get(name) == default:
                    method.pop(name, None)
        search = sparse.get("search") or {}
        if "sweep" in search and search["sweep"] is None:
            search.pop("sweep")
        for phase, names in (("phase1", ("max_model_nonzeros",)),
                             ("phase2", ("max_nonzeros", "support_limits", "sweep"))):
            for name in names:
                if (search.get(phase) or {}).get(name, 0) is None:
                    search[phase].pop(name)
        return payload
