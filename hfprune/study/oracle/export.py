"""What an oracle study saves of its retrained models: every trial's, or the best so far (``best/`` and
``best.json``), each physically pruned where the family can shrink, with a model card."""

from __future__ import annotations

import sys
from pathlib import Path

from hfprune.errors import HfpruneError
from hfprune.export.cards import write_trial_card
from hfprune.io import read_json, save_atomically, write_json_atomically
from hfprune.models.base import ModelAdapter
from hfprune.records.record import TrialRecord
from hfprune.records.store import read_trials
from hfprune.study.executors import FinishedTrial
from hfprune.study.oracle.recipe import OracleRecipe
from hfprune.study.tasks import Task

BEST, BEST_FILE = "best", "best.json"


def _is_better(record: TrialRecord, best: dict | None, metric: str) -> bool:
    return best is None or best.get("metric") != metric or record.is_better_than(metric, best["value"])


def best_so_far(directory: Path, metric: str) -> dict | None:
    """best.json: the trial whose checkpoint is in best/. A corrupt one is rebuilt from the records (best/ holds
    the best recorded trial's checkpoint), with one line on stderr."""
    path = directory / BEST_FILE
    if not path.exists():
        return None
    try:
        best = read_json(path, BEST_FILE)
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


def export_trial(trial: FinishedTrial, adapter: ModelAdapter, task: Task, recipe: OracleRecipe,
                 directory: Path) -> None:
    """Save a trial's checkpoint (the retrained model, physically pruned where the family can shrink) with a
    model card: every trial's, or the best so far (by the task's selection metric, in the direction the record
    declares)."""
    mode, record = recipe.export.checkpoints, trial.record
    if mode == "none" or trial.checkpoint is None:
        return
    metric = task.selection_metric(record)
    if mode == "all":
        target = directory / "checkpoints" / trial.spec.directory_name
    else:
        target = directory / BEST
        if not _is_better(record, best_so_far(directory, metric), metric):
            return
    save_atomically(trial.checkpoint, target,
                    extras=[task.save_companions, lambda folder: write_trial_card(
                        folder, recipe, record, adapter, chosen_by=metric if mode == "best" else None)])
    if mode == "best":
        value = record.metrics[metric]
        write_json_atomically(directory / BEST_FILE, {"trial_id": record.trial_id, "metric": metric,
                                                      "value": value, metric: value})
