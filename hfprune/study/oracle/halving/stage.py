"""Successive halving over the candidate masks of every setting: all candidates retrained for the smallest
budget, the best 1/eta by the validation metric retrained on from where they stopped, until one candidate (or
the last rung's few) has the full retraining; the best of the last rung is the setting's choice.

Rung records go to ``selection.jsonl`` (one line per candidate and rung: budget, validation metrics); the
choice of each setting becomes the study's trial record in ``trials.jsonl``, with its final test metrics and
its selection history. A rerun skips every rung record already written and every setting already chosen.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from typing import Any, Iterable, Iterator

from accelerate import PartialState

from hfprune.records.record import DIRECTIONS, TrialRecord
from hfprune.study.executors.base import Executor, FinishedTrial
from hfprune.study.oracle.trial import measures_final_train
from hfprune.study.oracle.context import OracleContext
from hfprune.study.spec import TrialSpec
from hfprune.study.oracle.halving.rung_trial import RungContext, RungSpec, checkpoint_path, load_checkpoint
from hfprune.study.oracle.halving.rungs import Rung, epochs_spent, rungs
from hfprune.records.store import TrialStore, read_records

SELECTION_FILE = "selection.jsonl"
METRICS = {"val_accuracy": "val_acc", "val_loss": "val_loss"}  # recipe name -> record metric


class RungStore(TrialStore):
    """``selection.jsonl``: the rung records of a study (not trials: the reporter does not read them)."""

    def __init__(self, directory, fingerprint: str | None = None):
        super().__init__(directory, fingerprint=fingerprint)
        self.path = self.directory / SELECTION_FILE

    def records(self) -> dict[str, dict[str, Any]]:
        """Rung records by trial id (those of another recipe, or twice the same rung trial, are refused)."""
        if not self.path.exists():
            return {}
        return {record["trial_id"]: record for record in read_records([self.path], self.fingerprint)}


def _ranked(alive: list[TrialSpec], specs: list[RungSpec], records: dict[str, dict], metric: str) -> list[TrialSpec]:
    """``alive`` best first by ``metric`` at this rung; ties keep their order of the rung before."""
    values = [records[spec.trial_id][metric] for spec in specs]
    higher = records[specs[0].trial_id][DIRECTIONS][metric]
    order = sorted(range(len(alive)), key=lambda i: ((-values[i] if higher else values[i]), i))
    return [alive[i] for i in order]


def _select(context: RungContext, executor: Executor, store: RungStore, candidates: list[TrialSpec],
            plan: list[Rung], metric: str) -> tuple[TrialSpec, list[dict], dict[str, dict], float]:
    """Run the rungs of one setting; returns the choice, the history per rung, every rung record and the seconds
    its rung trials trained."""
    main = PartialState().is_main_process
    alive, start, history, records, spent = candidates, 0, [], store.records(), 0.0
    for k, rung in enumerate(plan):
        alive = alive[:rung.size]
        specs = [RungSpec(spec.candidate, spec.repeat, spec.variant, rung=k, start=start, stop=rung.budget)
                 for spec in alive]
        pending = [spec for spec in specs if spec.trial_id not in records]
        if main:
            _say(f"selection rung {k + 1}/{len(plan)}: {rung.size} candidate(s) to {rung.budget:g} epochs"
                 + (f" ({rung.size - len(pending)} recorded before)" if len(pending) < rung.size else ""))
        for done, trial in enumerate(executor.run(context, pending), 1):
            records[trial.spec.trial_id] = trial.record.to_json()
            if main:
                store.append(trial.record)
                _say(f"  rung {k + 1}/{len(plan)}, candidate {done}/{len(pending)} {trial.spec.candidate.mask_id}: "
                     f"{metric} {trial.record.metrics.get(metric, float('nan')):.4f} "
                     f"in {sum(trial.record.timings.values()):.1f} s")
        alive = _ranked(alive, specs, records, metric)
        seconds = sum(sum((records[spec.trial_id].get("timings") or {}).values()) for spec in specs)
        history.append({"rung": k, "budget": rung.budget, "size": rung.size, "best": alive[0].candidate.mask_id,
                        f"best_{metric}": records[_rung_id(alive[0], k)][metric]})
        spent += seconds
        if main:
            _say(f"selection rung {k + 1}/{len(plan)} done in {seconds:.1f} s: best {metric} "
                 f"{history[-1][f'best_{metric}']:.4f} ({alive[0].candidate.mask_id})"
                 + (f"; {plan[k + 1].size} go on to {plan[k + 1].budget:g} epochs" if k + 1 < len(plan) else ""))
        if main:  # the checkpoints this rung continued from, and those of candidates that stop here
            keep = plan[k + 1].size if k + 1 < len(plan) else 1
            for spec in alive[keep:]:
                checkpoint_path(context.directory, spec, rung.budget).unlink(missing_ok=True)
            for spec in specs:
                if start:
                    checkpoint_path(context.directory, spec.base, start).unlink(missing_ok=True)
        start = rung.budget
    return alive[0], history, records, spent


def _rung_id(spec: TrialSpec, rung: int) -> str:
    """The trial id of ``spec``'s candidate at ``rung``."""
    return RungSpec(spec.candidate, spec.repeat, spec.variant, rung=rung).trial_id


def _say(line: str) -> None:
    """A line of the selection's progress on stderr (a rung takes minutes: never silent, even redirected)."""
    print(line, file=sys.stderr, flush=True)


def _chosen(context: OracleContext, choice: TrialSpec, plan: list[Rung], history: list[dict],
            records: dict[str, dict], metric: str, spent: float) -> FinishedTrial:
    """The setting's trial record: the choice's pruned and validation metrics from its rungs, its final test
    metrics (the first look at the test split) and the selection's history and cost."""
    recipe, task = context.recipe, context.task
    first = TrialRecord.from_json(records[_rung_id(choice, 0)])
    last = TrialRecord.from_json(records[_rung_id(choice, len(plan) - 1)])
    record = TrialRecord(choice.trial_id, choice.candidate.setting, choice.candidate.mask_id, choice.repeat,
                         first.seed, candidate={**choice.candidate.facts(), **first.candidate})
    for source, prefix in ((first, "pruned_"), (last, "val_")):
        for name, value in source.metrics.items():
            if name.startswith(prefix):
                record.add(name, value, source.directions.get(name))
    model = copy.deepcopy(context.dense).to(PartialState().device)
    model.load_state_dict(load_checkpoint(context.directory, choice, plan[-1].budget)["model"])
    record.add_all("final_test", task.evaluate(model, "test"), task.direction)
    record.timings["selection"] = spent  # every rung trial's training and evaluation
    if measures_final_train(recipe, task):
        record.add_all("final_train", task.evaluate(model, "train"), task.direction)
    selection = recipe.pruning.selection
    record.facts["selection"] = {
        "method": selection.method, "eta": selection.eta, "min_fraction": selection.min_fraction, "metric": metric,
        "candidates": plan[0].size, "rungs": history, "epochs_spent": epochs_spent(plan),
        "exhaustive_epochs": plan[0].size * recipe.retrain.epochs}
    exports = recipe.export.checkpoints != "none" and PartialState().is_main_process
    return FinishedTrial(choice, record, context.plan.exported(choice, model) if exports else None)


def successive_halving(context: OracleContext, executor: Executor, specs: Iterable[TrialSpec],
                       finished: set[str]) -> Iterator[FinishedTrial]:
    """Choose one mask per setting of ``specs`` (their first repeat) by successive halving, every rung trial run
    by ``executor``; yields each setting's chosen trial that is not yet ``finished`` (recorded)."""
    selection = context.recipe.pruning.selection
    metric = METRICS[selection.metric]
    rung_context = RungContext(**{field.name: getattr(context, field.name) for field in dataclasses.fields(context)})
    store = RungStore(context.directory, context.recipe.fingerprint())
    settings: dict[str, list[TrialSpec]] = {}
    for spec in specs:
        if spec.repeat == 0:
            settings.setdefault(spec.candidate.setting, []).append(spec)
    for candidates in settings.values():
        if any(spec.trial_id in finished for spec in candidates):
            continue
        plan = rungs(len(candidates), selection.eta, selection.min_fraction, context.recipe.retrain.epochs)
        choice, history, records, spent = _select(rung_context, executor, store, candidates, plan, metric)
        yield _chosen(context, choice, plan, history, records, metric, spent)
        # the driver has recorded (and exported) the choice before asking for the next one
        if PartialState().is_main_process:
            checkpoint_path(context.directory, choice, plan[-1].budget).unlink(missing_ok=True)
