"""The study engine: one runner for every study kind. Claim the directory, start the executor, record every trial
the kind's stages yield, show progress; the kind (:mod:`hfprune.study.kind`) says what runs.

Resumable: each finished trial is fsync-ed to the store before the next is recorded; a rerun of the same recipe
into the same directory skips every recorded trial and ends with the same records.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfprune.errors import HfpruneError
from hfprune.records.store import TrialStore, read_trials
from hfprune.seeding import make_deterministic
from hfprune.study.directory import RETRAINED, claim_directory, record_environment, trial_directory, write_manifest
from hfprune.study.environment import describe
from hfprune.study.executors import executor_for
from hfprune.study.executors.base import torch_threads
from hfprune.study.progress import TrialProgress
from hfprune.study.recipe import StudyRecipe
from hfprune.study.registry import kind_of
from hfprune.study.tracking import TrialTracker
from hfprune.train.trainer import get_accelerator


@dataclass
class StudyResult:
    directory: Path
    trials_total: int
    trials_run: int
    records: list[dict[str, Any]]


def use_determinism(recipe: StudyRecipe, deterministic: bool, workers: int | None, ray_address: str | None) -> None:
    """``--deterministic``: deterministic kernels and ``execution.threads_per_trial`` threads for the whole run,
    which runs its trials in this process."""
    if not deterministic:
        return
    if workers is not None or ray_address is not None:
        raise HfpruneError("--deterministic runs trials in this process; drop --workers/--ray-address")
    make_deterministic(recipe.execution.threads_per_trial)


def run_study(recipe: StudyRecipe, directory: str | Path, progress: bool = True, workers: int | None = None,
              ray_address: str | None = None, log_with: list[str] | None = None,
              deterministic: bool = False, pack: int | str | None = None, yes: bool = False) -> StudyResult:
    """Run (or resume) every trial of ``recipe`` into ``directory``: in this process, or on Ray with up to
    ``workers`` trials at once (a local instance, or the cluster at ``ray_address``).

    ``progress``: on a terminal, bars (one over trials, nested ones per epoch in this process); elsewhere one
    line per finished trial on stderr. ``log_with``: Accelerate trackers (tensorboard, wandb, mlflow) that get
    one run per trial. ``deterministic``: deterministic kernels and a fixed thread count
    (``execution.threads_per_trial``) for the whole run, in this process (not with Ray). ``pack`` overrides
    ``execution.pack`` (trials of one shape trained as one stacked model); ``yes`` runs a study of more trials than
    ``execution.max_trials`` (the kind counts them before any work and refuses otherwise).
    """
    directory = Path(directory)
    use_determinism(recipe, deterministic, workers, ray_address)
    accelerator = get_accelerator()
    main = accelerator.is_main_process
    bars = progress and main and sys.stderr.isatty()
    kind = kind_of(recipe)(recipe, directory, bars, go_on=yes)
    kind.check()  # everything the recipe can get wrong, its cost included, before anything is written
    executor = executor_for(recipe, kind.one_device_trials, workers, ray_address, accelerator.num_processes, pack)
    tracker = TrialTracker(log_with, directory, recipe.name) if log_with and main else None
    if main:
        claim_directory(recipe, directory)
        record_environment(directory, describe(accelerator.device, accelerator.num_processes, deterministic,
                                               recipe.execution.threads_per_trial))
    accelerator.wait_for_everyone()
    with torch_threads(recipe.execution.threads_per_trial):  # the dense model too: the same whatever the machine
        facts = kind.prepare()
    fingerprint = recipe.fingerprint()
    recorded = read_trials(directory, fingerprint)
    planned = kind.planned(recorded)
    if main:
        write_manifest(directory, {"kind": kind.name, "trials_planned": planned, **facts})
    accelerator.wait_for_everyone()

    store = TrialStore(directory, fingerprint=fingerprint)
    finished = {record["trial_id"] for record in recorded}
    watch = TrialProgress(planned, recorded, kind.selection_metric,
                          ("bar" if bars else "lines") if progress and main else None, shown=kind.shown)
    ran = 0
    with executor:
        for stage in kind.stages(lambda: read_trials(directory, fingerprint)):
            for trial in stage.run(executor, finished):  # in any order; the driver alone writes the store
                if main:  # export first: a kill in between reruns the trial, which re-exports the same model
                    kind.export(trial)
                    store.append(trial.record)
                    shutil.rmtree(trial_directory(directory, trial.spec.trial_id) / RETRAINED, ignore_errors=True)
                    watch.finished(trial.record)
                    if tracker is not None:
                        tracker.log(trial.record)
                finished.add(trial.spec.trial_id)
                ran += 1
            replanned = kind.planned(read_trials(directory, fingerprint))
            if replanned != planned:
                planned = replanned
                watch.replan(planned)
                if main:
                    write_manifest(directory, {"trials_planned": planned})
    watch.close()
    accelerator.wait_for_everyone()
    return StudyResult(directory, planned, ran, read_trials(directory))
