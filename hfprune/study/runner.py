"""The oracle-pruning study: dense model → candidate masks → one durable record per trial → report.

Resumable: each finished trial is fsync-ed to the store before the next starts; a rerun of the same
recipe into the same directory skips every recorded trial and ends with the same records.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from transformers import PreTrainedModel

from hfprune import __version__
from hfprune.config.recipe import Recipe
from hfprune.errors import HfpruneError
from hfprune.io import read_json, save_atomically, write_json_atomically
from hfprune.models import get_adapter
from hfprune.models.base import ModelAdapter, StructuredAdapter
from hfprune.oneshot.cards import write_trial_card
from hfprune.seeding import make_deterministic
from hfprune.study.dense import dense_config, dense_model
from hfprune.study.environment import describe, differences
from hfprune.study.executors import TrialContext, executor_for
from hfprune.study.plan import TrialSpec, plan_for
from hfprune.study.progress import TrialProgress
from hfprune.study.selection import successive_halving
from hfprune.study.tracking import TrialTracker
from hfprune.study.record import TrialRecord
from hfprune.study.store import TrialStore, read_trials
from hfprune.study.tasks import Task, build_task
from hfprune.study.trial import RETRAINED
from hfprune.train.trainer import get_accelerator


@dataclass
class StudyResult:
    directory: Path
    trials_total: int
    trials_run: int
    records: list[dict[str, Any]]


def _manifest(directory: Path) -> dict[str, Any]:
    """The study's ``study.json`` ({} before the study starts); a corrupt one is one HfpruneError line (it is
    never rewritten: deleting it is safe, the records carry their recipe's fingerprint)."""
    path = directory / "study.json"
    if not path.exists():
        return {}
    try:
        manifest = read_json(path, "study manifest")
    except HfpruneError as error:
        raise HfpruneError(f"{error}; delete it to start the manifest again (recorded trials are kept: "
                           "each names its recipe)") from None
    if not isinstance(manifest, dict):
        raise HfpruneError(f"study manifest {path} is a JSON {type(manifest).__name__}, not an object; delete it "
                           "to start the manifest again (recorded trials are kept: each names its recipe)")
    return manifest


def _claim_directory(recipe: Recipe, directory: Path) -> None:
    """Refuse to mix two different recipes' trials in one directory."""
    if directory.exists() and not directory.is_dir():
        raise HfpruneError(f"the study directory '{directory}' is an existing file; choose another --out")
    manifest = _manifest(directory)
    if manifest:
        recorded = manifest.get("fingerprint")
        if recorded != recipe.fingerprint():
            raise HfpruneError(
                f"'{directory}' holds a study of a different recipe (fingerprint {recorded}, this recipe "
                f"{recipe.fingerprint()}); choose another --out or delete that directory"
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    _write_manifest(directory, {"name": recipe.name, "fingerprint": recipe.fingerprint(),
                                "hfprune_version": __version__})


def _write_manifest(directory: Path, updates: dict[str, Any]) -> None:
    current = _manifest(directory)
    current.update(updates)
    write_json_atomically(directory / "study.json", current)


def _is_better(record: TrialRecord, best: dict | None, metric: str) -> bool:
    return best is None or best.get("metric") != metric or record.is_better_than(metric, best["value"])


def _best_so_far(directory: Path, metric: str) -> dict | None:
    """best.json: the trial whose checkpoint is in best/. A corrupt one is rebuilt from the records (best/ holds
    the best recorded trial's checkpoint), with one line on stderr."""
    path = directory / "best.json"
    if not path.exists():
        return None
    try:
        best = read_json(path, "best.json")
        if isinstance(best, dict) and isinstance(best.get("value"), (int, float)) and "metric" in best:
            return best
        problem = "not an object with metric and value"
    except HfpruneError as error:
        problem = str(error)
    best = None
    for data in read_trials(directory):
        record = TrialRecord.from_json(data)
        if record.metrics.get(metric) is not None and record.directions.get(metric) is not None \
                and _is_better(record, best, metric):
            best = {"trial_id": record.trial_id, "metric": metric, "value": record.metrics[metric]}
    print(f"warning: {path} is corrupt ({problem}); rebuilt from the records: best so far is "
          f"{best['trial_id'] if best else 'none'}", file=sys.stderr)
    if best is not None:
        write_json_atomically(path, {**best, metric: best["value"]})
    else:
        path.unlink()
    return best


def _export(adapter: ModelAdapter, task: Task, spec: TrialSpec, checkpoint: PreTrainedModel | None,
            record: TrialRecord, recipe: Recipe, directory: Path) -> None:
    """Save a trial's checkpoint (the retrained model, physically pruned where the family can shrink) with a
    model card: every trial's, or the best so far (by the task's selection metric, in the direction the record
    declares)."""
    mode = recipe.export.checkpoints
    if mode == "none" or checkpoint is None:
        return
    metric = task.selection_metric(record)
    if mode == "all":
        target = directory / "checkpoints" / spec.directory_name
    else:
        target = directory / "best"
        if not _is_better(record, _best_so_far(directory, metric), metric):
            return
    save_atomically(checkpoint, target,
                    extras=[task.save_companions, lambda folder: write_trial_card(folder, recipe, record, adapter)])
    if mode == "best":
        value = record.metrics[metric]
        write_json_atomically(directory / "best.json", {"trial_id": record.trial_id, "metric": metric,
                                                        "value": value, metric: value})


def _evaluate_dense(task: Task, dense: PreTrainedModel, device, workdir: Path) -> dict[str, float]:
    """Train and test metrics of the dense model, measured on ``device``; the model goes back to the CPU after
    (trials copy it from there)."""
    dense.to(device)
    try:
        return {f"{split}_{key}": value for split in ("train", "test")
                for key, value in task.evaluate(dense, split, workdir).items()}
    finally:
        dense.to("cpu")


def _record_environment(directory: Path, environment: dict) -> None:
    """The environment the study started on goes into study.json; a later one that differs says how, once."""
    recorded = _manifest(directory).get("environment")
    if recorded is None:
        _write_manifest(directory, {"environment": environment})
        return
    changed = differences(recorded, environment)
    if changed:
        print(f"warning: this run's environment differs from the one that started the study ({'; '.join(changed)}); "
              "trials recorded now may differ in the last digits from those recorded before", file=sys.stderr)


def use_determinism(recipe, deterministic: bool, workers: int | None, ray_address: str | None) -> None:
    """``--deterministic``: deterministic kernels and ``execution.threads_per_trial`` (else 1) threads for the
    whole run, which runs its trials in this process."""
    if not deterministic:
        return
    if workers is not None or ray_address is not None:
        raise HfpruneError("--deterministic runs trials in this process; drop --workers/--ray-address")
    make_deterministic(recipe.execution.threads_per_trial or 1)


def run_study(recipe: Recipe, directory: str | Path, progress: bool = True, workers: int | None = None,
              ray_address: str | None = None, log_with: list[str] | None = None,
              deterministic: bool = False) -> StudyResult:
    """Run (or resume) every trial of ``recipe`` into ``directory``: in this process, or on Ray with up to
    ``workers`` trials at once (a local instance, or the cluster at ``ray_address``).

    ``progress``: on a terminal, bars (one over trials, nested ones per epoch in this process); elsewhere one
    line per finished trial on stderr. ``log_with``: Accelerate trackers (tensorboard, wandb, mlflow) that get
    one run per trial. ``deterministic``: deterministic kernels and a fixed thread count
    (``execution.threads_per_trial``, else 1) for the whole run, in this process (not with Ray).
    """
    directory = Path(directory)
    use_determinism(recipe, deterministic, workers, ray_address)
    accelerator = get_accelerator()
    main = accelerator.is_main_process
    bars = progress and main and sys.stderr.isatty()
    adapter = get_adapter(recipe.model.family, recipe.model.dtype)
    task = build_task(recipe, bars)
    executor = executor_for(recipe, task, workers, ray_address, accelerator.num_processes)
    tracker = TrialTracker(log_with, directory, recipe.name) if log_with and main else None
    if main:
        _claim_directory(recipe, directory)
        _record_environment(directory, describe(accelerator.device, accelerator.num_processes, deterministic,
                                                recipe.execution.threads_per_trial))
    accelerator.wait_for_everyone()
    dense_evaluated = "dense" in _manifest(directory)  # read before anyone writes it

    # Everything a recipe can get wrong about the model (groups, ratios) fails here, before any pretraining.
    config = dense_config(recipe, adapter, task)
    groups = adapter.groups(config) if isinstance(adapter, StructuredAdapter) else {}
    plan = plan_for(recipe, adapter, groups, task)
    specs = plan.trials()
    dense = dense_model(recipe, adapter, task, directory, bars, config)
    if not dense_evaluated:  # on every process: an evaluation may synchronise them
        metrics = _evaluate_dense(task, dense, accelerator.device, directory / "dense_eval")
        if main:
            _write_manifest(directory, {"dense": metrics, "trials_planned": len(specs),
                                        "processes": accelerator.num_processes,
                                        "groups": {name: group.size for name, group in groups.items()}})
        accelerator.wait_for_everyone()

    store = TrialStore(directory, fingerprint=recipe.fingerprint())
    finished = store.finished_ids()
    todo = [spec for spec in specs if spec.trial_id not in finished]
    selecting = recipe.pruning.selection is not None  # one chosen trial per setting instead of every candidate
    planned = len({spec.candidate.setting for spec in specs}) if selecting else len(specs)
    watch = TrialProgress(planned, read_trials(directory, recipe.fingerprint()),
                          task.selection_metric, ("bar" if bars else "lines") if progress and main else None)
    context = TrialContext(recipe, dense, task, plan, directory, bars)
    with executor:
        trials = successive_halving(context, executor, specs, finished) if selecting else executor.run(context, todo)
        for trial in trials:  # in any order; the driver alone writes the store
            if main:  # export first: a kill in between reruns the trial, which re-exports the same model
                _export(adapter, task, trial.spec, trial.checkpoint, trial.record, recipe, directory)
                store.append(trial.record)
                shutil.rmtree(directory / "trials" / trial.spec.directory_name / RETRAINED, ignore_errors=True)
                watch.finished(trial.record)
                if tracker is not None:
                    tracker.log(trial.record)
    watch.close()
    accelerator.wait_for_everyone()
    records = read_trials(directory)
    return StudyResult(directory, planned, len(records) - len(finished) if selecting else len(todo), records)
