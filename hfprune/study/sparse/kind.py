"""The sparse-training study kind: the dense reference, every method at every budget, structured masks and the
combinatorial search, each trial trained from the repeat's seeded initialisation — on any family and dataset.

Stage 1 runs the dense model, phase 1 of the search, the structured masks and the methods; stage 2 runs phase 2 of
the search, whose widths (``auto``) come from phase 1's records.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch
from transformers import PretrainedConfig

from hfprune.errors import HfpruneError
from hfprune.io import save_atomically
from hfprune.models import get_adapter
from hfprune.models.base import ModelAdapter, StructuredAdapter
from hfprune.pruning.structured.groups import expand_kinds, parameter_masks
from hfprune.pruning.structured.samplers import candidates_for
from hfprune.study.dense import dense_config
from hfprune.study.directory import write_manifest
from hfprune.study.executors import FinishedTrial
from hfprune.study.kind import Stage, StudyKind, TrialsStage
from hfprune.study.sparse.candidates import SEARCH, DenseTrial, MethodTrial, SearchTrial, StructuredTrial
from hfprune.study.sparse.recipe import SEARCH_LAYERS, SparseRecipe
from hfprune.study.sparse.search import phase1_candidates, phase2_candidates, smallest_widths
from hfprune.study.sparse.trial import run_sparse_trial
from hfprune.study.spec import TrialSpec
from hfprune.study.tasks import Task, build_task
from hfprune.train.trainer import get_accelerator


@dataclass
class SparseContext:
    """What every trial of a sparse study shares, and how it runs one (on Ray: put in the object store once)."""

    recipe: SparseRecipe
    adapter: ModelAdapter
    config: PretrainedConfig
    task: Task
    progress: bool = False

    def run(self, spec: TrialSpec, progress: bool | None = None) -> FinishedTrial:
        recipe = self.recipe
        record, model = run_sparse_trial(spec, self.adapter, self.config, self.task, recipe.training, recipe.seed,
                                         self.progress if progress is None else progress)
        return FinishedTrial(spec, record, model.to("cpu") if recipe.sparse.checkpoints == "all" else None)


class SparseKind(StudyKind):
    """A sparse-training study (recipe: ``sparse`` and ``training`` sections)."""

    name = "sparse"
    recipe_class = SparseRecipe
    sections = ("sparse", "training")
    shown: ClassVar[str] = "nonzeros"

    def check(self) -> None:
        recipe = self.recipe
        if get_accelerator().num_processes > 1:
            raise HfpruneError("a sparse study trains small models one per process: run it without accelerate "
                               "launch (use --workers N to run trials side by side)")
        self.adapter = get_adapter(recipe.model.family, recipe.model.dtype)
        self.task = build_task(recipe, self.progress)
        self.config = dense_config(recipe, self.adapter, self.task)
        with torch.device("meta"):
            shapes = {name: weight.shape for name, weight in
                      self.adapter.prunable_weights(self.adapter.build(self.config)).items()}
        self.total_weights = sum(shape.numel() for shape in shapes.values())
        too_big = [budget for budget in recipe.sparse.budgets if budget >= self.total_weights]
        if too_big:
            raise HfpruneError(f"sparse.budgets {too_big} are not below the model's {self.total_weights} prunable "
                               "weights; lower them")
        self.structured = self._structured(shapes)
        self.first = self._stage_one()

    def _structured(self, shapes: dict[str, torch.Size]) -> list[StructuredTrial]:
        """The structured masks of ``sparse.structured``, each with the count of prunable weights it keeps."""
        settings = self.recipe.sparse.structured
        if not settings:
            return []
        assert isinstance(self.adapter, StructuredAdapter)  # the recipe refuses structured masks otherwise
        groups = self.adapter.groups(self.config)
        weights = {name: torch.empty(shape, dtype=torch.bool) for name, shape in shapes.items()}
        trials = []
        for setting in settings:
            for candidate in candidates_for(groups, expand_kinds(groups, setting.ratios), setting.label,
                                            setting.candidates.mode, setting.candidates.num, self.recipe.seed):
                masks = parameter_masks(groups, candidate.mask, weights)
                kept = sum(int(masks[name].sum()) if name in masks else shape.numel()
                           for name, shape in shapes.items())
                trials.append(StructuredTrial(candidate, groups, kept))
        return trials

    def _stage_one(self) -> list[TrialSpec]:
        """The dense reference, phase 1 of the search, the structured masks and every method at every budget,
        × repeats."""
        sparse = self.recipe.sparse
        candidates: list = [DenseTrial(self.total_weights)]
        if sparse.search is not None and sparse.search.phase1 is not None:
            phase1 = sparse.search.phase1
            candidates += [SearchTrial(c) for c in phase1_candidates(range(phase1.low, phase1.high + 1),
                                                                     SEARCH_LAYERS)]
        candidates += self.structured
        candidates += [MethodTrial(method, budget) for method in sparse.methods for budget in sparse.budgets]
        return [TrialSpec(candidate, repeat) for candidate in candidates for repeat in range(sparse.repeats)]

    def _phase2_widths(self, records: list[dict]) -> tuple[int, ...] | None:
        """Phase 2's widths: the recipe's, or (auto) phase 1's sparsest widths reaching the target accuracy."""
        phase2 = self.recipe.sparse.search.phase2
        if phase2.widths != "auto":
            return tuple(phase2.widths)
        phase1 = [record for record in records if record.get("setting") == SEARCH and record.get("phase") == 1]
        return smallest_widths(phase1, phase2.target_acc)

    def _stage_two(self, records: list[dict]) -> tuple[list[TrialSpec], tuple[int, ...] | None]:
        """Phase 2 of the search (none without it, or while no phase-1 widths reach the target)."""
        recipe = self.recipe
        search = recipe.sparse.search
        if search is None or search.phase2 is None:
            return [], None
        widths = self._phase2_widths(records)
        if widths is None:
            return [], None
        phase2 = search.phase2
        budgets = recipe.sparse.budgets if phase2.budgets is None else (phase2.budgets or None)
        candidates = phase2_candidates(widths, budgets=budgets, per_budget_limit=phase2.per_budget_limit,
                                       seed=recipe.seed)
        return [TrialSpec(SearchTrial(c), repeat) for c in candidates for repeat in range(recipe.sparse.repeats)], \
            widths

    def prepare(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"total_weights": self.total_weights}
        if self.adapter.searchable:
            facts["hidden_sizes"] = self.recipe.hidden_sizes
        return facts

    def planned(self, records: list[dict]) -> int:
        return len(self.first) + len(self._stage_two(records)[0])

    def stages(self, records: Callable[[], list[dict]]) -> Iterator[Stage]:
        context = SparseContext(self.recipe, self.adapter, self.config, self.task, self.progress)
        yield TrialsStage(context, self.first)
        second, widths = self._stage_two(records())
        if widths is not None:
            write_manifest(self.directory, {"phase2_widths": list(widths)})
        elif self.recipe.sparse.search is not None and self.recipe.sparse.search.phase2 is not None:
            target = self.recipe.sparse.search.phase2.target_acc
            print(f"warning: no phase-1 widths reach accuracy {target:g}; phase 2 of the search is skipped (lower "
                  "search.phase2.target_acc, train longer, or give search.phase2.widths)", file=sys.stderr)
        yield TrialsStage(context, second)

    def export(self, trial: FinishedTrial) -> None:
        if trial.checkpoint is not None:
            save_atomically(trial.checkpoint, self.directory / "checkpoints" / trial.spec.directory_name)

    @classmethod
    def report(cls, directory: Path, plots: bool = True, **options) -> dict[str, Any]:
        from hfprune.study.sparse.report import report_sparse_study

        return report_sparse_study(directory, plots=plots)

    @classmethod
    def print_summary(cls, summary: dict[str, Any], console) -> None:
        from hfprune.study.sparse.report import print_sparse_summary

        print_sparse_summary(summary, console)
