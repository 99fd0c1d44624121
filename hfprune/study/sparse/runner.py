"""The sparse-training study: the dense reference, the combinatorial search and every pruning method at every
budget, one durable record per trial — resumable like the oracle study, and fanned out on Ray the same way.

Stage 1 runs the dense model, phase 1 of the search and the methods; stage 2 runs phase 2 of the search, whose
widths (``auto``) come from phase 1's records.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from transformers import PretrainedConfig

from hfprune.config.sparse_recipe import SEARCH_LAYERS, SparseStudyRecipe
from hfprune.data.spiral import load_spiral
from hfprune.errors import HfpruneError
from hfprune.io import save_atomically
from hfprune.models import get_adapter
from hfprune.study.environment import describe
from hfprune.study.executors import FinishedTrial, executor_for
from hfprune.study.plan import TrialSpec
from hfprune.study.progress import TrialProgress
from hfprune.study.runner import StudyResult, _claim_directory, _record_environment, _write_manifest, use_determinism
from hfprune.study.sparse.candidates import SEARCH, DenseTrial, MethodTrial, SearchTrial
from hfprune.study.sparse.search import phase1_candidates, phase2_candidates, smallest_widths
from hfprune.study.sparse.trial import run_sparse_trial
from hfprune.study.store import TrialStore, read_trials
from hfprune.train.trainer import get_accelerator

ONE_DEVICE = SimpleNamespace(one_device_trials=True)  # a sparse trial trains one small model on one device
SELECTION_METRIC = "final_test_acc"


@dataclass
class SparseContext:
    """What every trial of a sparse study shares (on Ray: put in the object store once)."""

    recipe: SparseStudyRecipe
    adapter: Any
    config: PretrainedConfig
    data: Any
    directory: Path
    progress: bool = False

    def run(self, spec: TrialSpec, progress: bool | None = None) -> FinishedTrial:
        recipe = self.recipe
        record, model = run_sparse_trial(spec, self.adapter, self.config, self.data, recipe.training, recipe.seed,
                                         recipe.evaluation.batch_size,
                                         self.progress if progress is None else progress)
        return FinishedTrial(spec, record, model.to("cpu") if recipe.sparse.checkpoints == "all" else None)


def stage_one(recipe: SparseStudyRecipe) -> list[TrialSpec]:
    """The dense reference, phase 1 of the search and every method at every budget, × repeats."""
    sparse = recipe.sparse
    candidates: list = [DenseTrial(recipe.total_weights)]
    if sparse.search is not None and sparse.search.phase1 is not None:
        phase1 = sparse.search.phase1
        candidates += [SearchTrial(c) for c in phase1_candidates(range(phase1.low, phase1.high + 1), SEARCH_LAYERS)]
    candidates += [MethodTrial(method, budget) for method in sparse.methods for budget in sparse.budgets]
    return [TrialSpec(candidate, repeat) for candidate in candidates for repeat in range(sparse.repeats)]


def phase2_widths(recipe: SparseStudyRecipe, records: list[dict]) -> tuple[int, ...] | None:
    """Phase 2's widths: the recipe's, or (auto) phase 1's sparsest widths reaching the target accuracy."""
    phase2 = recipe.sparse.search.phase2
    if phase2.widths != "auto":
        return tuple(phase2.widths)
    phase1 = [record for record in records if record.get("setting") == SEARCH and record.get("phase") == 1]
    return smallest_widths(phase1, phase2.target_acc)


def stage_two(recipe: SparseStudyRecipe, records: list[dict]) -> tuple[list[TrialSpec], tuple[int, ...] | None]:
    """Phase 2 of the search (none without it, or when no phase-1 widths reach the target)."""
    search = recipe.sparse.search
    if search is None or search.phase2 is None:
        return [], None
    widths = phase2_widths(recipe, records)
    if widths is None:
        return [], None
    phase2 = search.phase2
    budgets = recipe.sparse.budgets if phase2.budgets is None else (phase2.budgets or None)
    candidates = phase2_candidates(widths, budgets=budgets, per_budget_limit=phase2.per_budget_limit,
                                   seed=recipe.seed)
    return [TrialSpec(SearchTrial(c), repeat) for c in candidates for repeat in range(recipe.sparse.repeats)], widths


def _run_specs(context: SparseContext, executor, specs: list[TrialSpec], store: TrialStore,
               watch: TrialProgress) -> int:
    finished = store.finished_ids()
    todo = [spec for spec in specs if spec.trial_id not in finished]
    for trial in executor.run(context, todo):
        if trial.checkpoint is not None:  # first: a kill in between reruns the trial, which saves the same model
            save_atomically(trial.checkpoint, context.directory / "checkpoints" / trial.spec.directory_name)
        store.append(trial.record)
        watch.finished(trial.record)
    return len(todo)


def run_sparse_study(recipe: SparseStudyRecipe, directory: str | Path, progress: bool = True,
                     workers: int | None = None, ray_address: str | None = None,
                     deterministic: bool = False) -> StudyResult:
    """Run (or resume) every trial of a sparse study into ``directory`` (see :func:`hfprune.study.runner.run_study`
    for ``workers``, ``ray_address`` and ``deterministic``)."""
    directory = Path(directory)
    use_determinism(recipe, deterministic, workers, ray_address)
    accelerator = get_accelerator()
    if accelerator.num_processes > 1:
        raise HfpruneError("a sparse study trains tiny models one per process: run it without accelerate launch "
                           "(use --workers N to run trials side by side)")
    bars = progress and sys.stderr.isatty()
    adapter = get_adapter(recipe.model.family, recipe.model.dtype)
    config = adapter.config(0, 0, 0, recipe.model.config)
    data = load_spiral(train_limit=recipe.data.train_limit, seed=recipe.seed)
    executor = executor_for(recipe, ONE_DEVICE, workers, ray_address, accelerator.num_processes)
    _claim_directory(recipe, directory)
    _record_environment(directory, describe(accelerator.device, 1, deterministic,
                                            recipe.execution.threads_per_trial))
    store = TrialStore(directory, fingerprint=recipe.fingerprint())
    context = SparseContext(recipe, adapter, config, data, directory, bars)
    first = stage_one(recipe)
    recorded = read_trials(directory, recipe.fingerprint())
    second, _ = stage_two(recipe, recorded)  # known now when phase 2's widths are explicit or phase 1 is done
    _write_manifest(directory, {"kind": "sparse", "trials_planned": len(first) + len(second),
                                "total_weights": recipe.total_weights, "hidden_sizes": recipe.hidden_sizes})
    watch = TrialProgress(len(first) + len(second), recorded, lambda record: SELECTION_METRIC,
                          ("bar" if bars else "lines") if progress else None, shown="nonzeros")
    with executor:
        ran = _run_specs(context, executor, first, store, watch)
        second, widths = stage_two(recipe, read_trials(directory, recipe.fingerprint()))
        if widths is not None:
            _write_manifest(directory, {"phase2_widths": list(widths), "trials_planned": len(first) + len(second)})
        elif recipe.sparse.search is not None and recipe.sparse.search.phase2 is not None:
            target = recipe.sparse.search.phase2.target_acc
            print(f"warning: no phase-1 widths reach accuracy {target:g}; phase 2 of the search is skipped (lower "
                  "search.phase2.target_acc, train longer, or give search.phase2.widths)", file=sys.stderr)
        watch.replan(len(first) + len(second))
        ran += _run_specs(context, executor, second, store, watch)
    watch.close()
    records = read_trials(directory)
    return StudyResult(directory, len(first) + len(second), ran, records)
