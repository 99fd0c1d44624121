"""One candidate through one rung of successive halving: retrained on from where the rung before stopped.

A rung trial is a unit of work like any trial (it needs only the study's context and its spec), so the study's
executor runs it in this process or as a Ray task. Its checkpoint (model, masks, optimizer, schedule, RNG and
shuffling state) lives in the candidate's trial folder under ``selection/epoch<N>.pt``.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState

from hfprune.pruning.masking import MaskedParameters, pruned_l1
from hfprune.seeding import stable_seed
from hfprune.records.record import TrialRecord
from hfprune.study.executors.base import FinishedTrial
from hfprune.study.oracle.context import OracleContext
from hfprune.study.spec import TrialSpec
from hfprune.train.trainer import TrainState, train


@dataclass(frozen=True)
class RungSpec(TrialSpec):
    """A candidate's retraining from epoch ``start`` to ``stop`` of the full schedule, in rung ``rung``."""

    rung: int = 0
    start: int = 0
    stop: int = 0

    @property
    def base(self) -> TrialSpec:
        """The candidate's ordinary trial (its id, seed and folder)."""
        return TrialSpec(self.candidate, self.repeat, self.variant)

    @property
    def trial_id(self) -> str:
        return f"{self.base.trial_id}:rung{self.rung}"

    @property
    def directory_name(self) -> str:
        return self.base.directory_name


def checkpoint_path(directory: Path, spec: TrialSpec, epoch: int) -> Path:
    """Where a candidate's retraining is saved after ``epoch`` epochs."""
    return Path(directory) / "trials" / spec.directory_name / "selection" / f"epoch{epoch}.pt"


def load_checkpoint(directory: Path, spec: TrialSpec, epoch: int) -> dict:
    return torch.load(checkpoint_path(directory, spec, epoch), map_location="cpu")


def _save(path: Path, payload: dict) -> None:
    """torch.save into ``path.partial``, then rename: a kill leaves the old state or the new, never half. The main
    process writes; the others of a launch wait for it."""
    state = PartialState()
    if state.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(payload, partial)
        os.replace(partial, path)
    state.wait_for_everyone()


def run_rung(context: OracleContext, spec: RungSpec, progress: bool) -> TrialRecord:
    """Retrain ``spec``'s candidate from epoch ``start`` (pruned afresh at 0, else its checkpoint) to ``stop``,
    save the checkpoint and record the validation metrics at ``stop`` (the test split is never looked at)."""
    recipe, task, base = context.recipe, context.task, spec.base
    seed = stable_seed(recipe.seed, base.trial_id)  # the seed the candidate's ordinary trial would have
    model = copy.deepcopy(context.dense).to(PartialState().device)
    record = TrialRecord(spec.trial_id, spec.candidate.setting, spec.candidate.mask_id, spec.repeat, seed,
                         candidate=spec.candidate.facts())
    started = time.perf_counter()
    if spec.start == 0:
        masks, facts = context.plan.masks(base, model)
        record.candidate.update(facts)
        record.add("pruned_l1", pruned_l1(context.dense, masks), higher_is_better=False)
        MaskedParameters(model, masks).apply()
        record.add_all("pruned_train", task.evaluate(model, "train"), task.direction)
        state = None
    else:
        saved = load_checkpoint(context.directory, base, spec.start)
        model.load_state_dict(saved["model"])
        masks = {name: mask.to(model.device) for name, mask in saved["masks"].items()}
        state = TrainState(**saved["state"])
    masked = MaskedParameters(model, masks)
    result = train(model, task.train_set, recipe.retrain, task.loss_fn(recipe.retrain), seed=seed, masks=masked,
                   progress=progress, description=f"rung {spec.rung}", resume=state, stop_epoch=spec.stop,
                   find_unused_parameters=task.find_unused_parameters)
    _save(checkpoint_path(context.directory, base, spec.stop),
          {"model": model.state_dict(), "masks": {k: v.cpu() for k, v in masks.items()},
           "state": result.state.to_dict()})
    record.add_all("val", task.evaluate(model, "validation"), task.direction)
    record.timings["rung_s"] = time.perf_counter() - started
    record.facts.update(rung=spec.rung, start_epoch=spec.start, budget=spec.stop, retrain_steps=result.steps,
                        mask_violations=masked.violations())
    return record


@dataclass
class RungContext(OracleContext):
    """The study's context, running rung trials instead of whole ones."""

    def run(self, spec: RungSpec, progress: bool | None = None) -> FinishedTrial:
        return FinishedTrial(spec, run_rung(self, spec, self.progress if progress is None else progress), None)
