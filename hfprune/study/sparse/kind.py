"""The sparse-training study kind: the dense reference, every method at every budget, structured masks and the
combinatorial search, each trial trained from its seeded initialisation — on any family and dataset — at every
point of the recipe's sweep.

Stage 1 runs the dense model, phase 1 of the search, the structured masks and the methods; stage 2 runs phase 2 of
the search, whose widths (``auto``) come from phase 1's records. Each stage is counted before it starts (never
listed: phase 2 streams) and refused beyond ``execution.max_trials`` unless the run says to go on. Trials of one
shape train as packs where the recipe or ``--pack`` asks (:class:`SparseContext`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import torch

from hfprune.errors import HfpruneError
from hfprune.io import save_atomically
from hfprune.models import get_adapter
from hfprune.models.base import StructuredAdapter
from hfprune.pruning.sparse_training.phases import run_phase_packs
from hfprune.pruning.structured.groups import expand_kinds, parameter_masks
from hfprune.pruning.structured.samplers import candidates_for
from hfprune.study.dense import dense_config
from hfprune.study.directory import write_manifest
from hfprune.study.executors import FinishedTrial
from hfprune.study.cost import Cost
from hfprune.study.kind import Stage, StudyKind, TrialsStage
from hfprune.study.sparse.candidates import SEARCH, DenseTrial, MethodTrial, SearchTrial, StructuredTrial
from hfprune.study.sparse.plan import (SEARCH_LAYERS, SECTIONS, count_trials, phase2_space, phase2_trials,
                                       search_runs, search_variants)
from hfprune.study.sparse.recipe import SparseRecipe
from hfprune.study.sparse.search import phase1_candidates, phase2_candidates, smallest_widths
from hfprune.study.sparse.trial import TrialSetup, initial_model, run_sparse_trial, trial_phases
from hfprune.study.spec import TrialSpec
from hfprune.study.sweep import PLAIN, Variant, runs, variants
from hfprune.study.tasks import build_task
from hfprune.train.packed import calibrate_pack_size, pack_key
from hfprune.train.trainer import get_accelerator


@dataclass
class SparseContext:
    """What every trial of a sparse study shares, and how it runs one alone or several as one pack (on Ray: put in
    the object store once)."""

    setup: TrialSetup
    checkpoints: bool

    def __getstate__(self) -> dict:
        return {key: value for key, value in vars(self).items() if key != "_template"}  # rebuilt where needed

    def _finished(self, spec: TrialSpec, record, model) -> FinishedTrial:
        return FinishedTrial(spec, record, model.to("cpu") if self.checkpoints else None)

    def run(self, spec: TrialSpec, progress: bool | None = None) -> FinishedTrial:
        setup = self.setup if progress is None else dataclasses.replace(self.setup, progress=progress)
        return self._finished(spec, *run_sparse_trial(spec, setup))

    def pack_key(self, spec: TrialSpec) -> str:
        """Trials of one model shape, training settings shared by a pack (not lr or schedule), data order rule and
        number of training phases pack together."""
        if getattr(self, "_template", None) is None:
            with torch.device("meta"):
                self._template = self.setup.adapter.build(self.setup.config)
        section = self.setup.section(spec)
        candidate = spec.candidate
        phases = candidate.method.phase_count(section) if isinstance(candidate, MethodTrial) else 1
        return f"{pack_key(self._template, section)}|drop_last={self.setup.recipe.sparse.drop_last}|phases={phases}"

    def run_pack(self, specs: list[TrialSpec], progress: bool | None = None) -> list[FinishedTrial]:
        """Several trials trained as one stacked model; each record is the trial's alone (bit for bit for the sparse
        MLP on the CPU; within :data:`hfprune.train.packed.TOLERANCE` for other families)."""
        setup = dataclasses.replace(self.setup, progress=False)
        outcomes = run_phase_packs([trial_phases(spec, setup) for spec in specs])
        return [self._finished(spec, record, model) for spec, (record, model) in zip(specs, outcomes)]

    def calibrate(self, spec: TrialSpec) -> int:
        """The pack size that trains the most of these trials per second here (a few steps at 1, 8, 32, 128)."""
        setup = self.setup
        section = setup.section(spec)
        model = initial_model(setup.adapter, setup.config, setup.recipe.seed, spec.repeat)
        calibration = calibrate_pack_size(model, setup.task.train_set, section, setup.task.loss_fn(section),
                                          sizes=(1, 8, 32, 128))
        print(calibration.describe(), file=sys.stderr)
        return calibration.best


def steps_per_epoch(items: int, batch_size: int, drop_last: bool) -> int:
    return items // batch_size if drop_last else math.ceil(items / batch_size)


class SparseKind(StudyKind):
    """A sparse-training study (recipe: ``sparse`` and ``training`` sections)."""

    name = "sparse"
    recipe_class = SparseRecipe
    sections = SECTIONS
    shown: ClassVar[str] = "nonzeros"

    # -- what runs ---------------------------------------------------------------------------------------------
    def _variants(self) -> list[Variant]:
        return variants(self.recipe.sweep)

    def _search_variants(self, phase: int = 1) -> list[Variant]:
        return search_variants(self.recipe.sweep, self.recipe.sparse.search, phase)

    def _runs(self) -> int:
        return runs(self.recipe.sweep, self.recipe.sparse.repeats)

    def _search_runs(self, phase: int = 1) -> int:
        return search_runs(self.recipe.sweep, self.recipe.sparse.search, self.recipe.sparse.repeats, phase)

    def _phase1(self) -> list[SearchTrial]:
        search = self.recipe.sparse.search
        if search is None or search.phase1 is None:
            return []
        phase1 = search.phase1
        return [SearchTrial(c) for c in phase1_candidates(range(phase1.low, phase1.high + 1), SEARCH_LAYERS,
                                                          phase1.max_model_nonzeros)]

    def _steps(self, parts: dict[str, int]) -> int:
        """Optimizer steps of ``parts``' trials, roughly (IMP's rounds and magnitude's two runs counted)."""
        recipe = self.recipe
        items = len(self.task.train_set)
        epochs = [variant.apply(recipe.training).epochs for variant in self._variants()]
        per_trial = sum(epochs) / len(epochs) * steps_per_epoch(items, recipe.training.batch_size,
                                                               recipe.sparse.drop_last)
        methods = recipe.sparse.methods
        phases = sum(method.phase_count(recipe.training) for method in methods) / len(methods) if methods else 1
        return round(per_trial * (sum(parts.values()) - parts.get("methods", 0) + parts.get("methods", 0) * phases))

    def check(self) -> None:
        recipe = self.recipe
        if get_accelerator().num_processes > 1:
            raise HfpruneError("a sparse study trains small models one per process: run it without accelerate "
                               "launch (use --workers N to run trials side by side)")
        # counted from the recipe alone, as hfprune run counts it before importing the engine: refused at once
        parts, pending = count_trials(recipe.sparse, recipe.sweep)
        early = Cost(parts, None, pending)
        if early.beyond(recipe.execution.max_trials) and not self.go_on:
            self.guard(early)
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
        short = [budget for budget in recipe.sparse.budgets for method in recipe.sparse.methods
                 if MethodTrial(method, budget).target(recipe.sparse.final_count) < 1]
        if short:
            raise HfpruneError(f"sparse.final_count reference leaves no weight at budgets {sorted(set(short))}; raise "
                               "them or use final_count: exact")
        self.structured = self._structured(shapes)
        self.first = self._stage_one()
        parts, pending = count_trials(recipe.sparse, recipe.sweep, len(self.structured))
        self.guard(Cost(parts, self._steps(parts), pending))
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

    def _specs(self, candidates: Iterable, points: list[Variant], count: int | None = None) -> Iterator[TrialSpec]:
        """Every candidate at every sweep point, each run ``count`` times (default: the sweep's runs; the candidate
        slowest)."""
        for candidate in candidates:
            for variant in points:
                for run in range(self._runs() if count is None else count):
                    yield TrialSpec(candidate, run, None if variant is PLAIN else variant)

    def _stage_one(self) -> list[TrialSpec]:
        """The dense reference, phase 1 of the search, the structured masks and every method at every budget,
        × sweep points × runs."""
        sparse, points = self.recipe.sparse, self._variants()
        methods = [MethodTrial(method, budget) for method in sparse.methods for budget in sparse.budgets]
        return [*self._specs([DenseTrial(self.total_weights)], points),
                *self._specs(self._phase1(), self._search_variants(), self._search_runs()),
                *self._specs(self.structured, points), *self._specs(methods, points)]

    def _phase2_widths(self, records: list[dict]) -> tuple[int, ...] | None:
        """Phase 2's widths: the recipe's, or (auto) phase 1's sparsest widths reaching the target accuracy."""
        phase2 = self.recipe.sparse.search.phase2
        if phase2.widths != "auto":
            return tuple(phase2.widths)
        phase1 = [record for record in records if record.get("setting") == SEARCH and record.get("phase") == 1]
        return smallest_widths(phase1, phase2.target_acc)

    def _stage_two(self, records: list[dict]) -> tuple[Iterator[TrialSpec], int, tuple[int, ...] | None]:
        """Phase 2 of the search, lazily, with its count (none without it, or while no phase-1 widths reach the
        target)."""
        search = self.recipe.sparse.search
        widths = None if search is None or search.phase2 is None else self._phase2_widths(records)
        if widths is None:
            return iter(()), 0, None
        space = phase2_space(self.recipe.sparse, widths)
        points, repeats = self._search_variants(2), self._search_runs(2)
        count = phase2_trials(self.recipe.sparse, self.recipe.sweep, widths)
        candidates = (SearchTrial(c) for c in phase2_candidates(**space, seed=self.recipe.seed))
        return self._specs(candidates, points, repeats), count, widths

    def prepare(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"total_weights": self.total_weights}
        if self.adapter.searchable:
            facts["hidden_sizes"] = self.recipe.hidden_sizes
        return facts

    def planned(self, records: list[dict]) -> int:
        return len(self.first) + self._stage_two(records)[1]

    def stages(self, records: Callable[[], list[dict]]) -> Iterator[Stage]:
        setup = TrialSetup(self.recipe, self.adapter, self.config, self.task, self.progress)
        context = SparseContext(setup, self.recipe.sparse.checkpoints == "all")
        yield TrialsStage(context, self.first)
        second, count, widths = self._stage_two(records())
        search = self.recipe.sparse.search
        if widths is not None:
            write_manifest(self.directory, {"phase2_widths": list(widths)})
            if search.phase2.widths == "auto":  # counted now that phase 1 chose them: refused before any work
                self.guard(Cost({"search phase 2": count}), f"{self.recipe.name}, phase 2 at widths {list(widths)}")
        elif search is not None and search.phase2 is not None:
            target = search.phase2.target_acc
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
