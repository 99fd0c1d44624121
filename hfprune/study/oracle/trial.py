"""Stage 3 of a study: one candidate, from pruning to final evaluation, as one typed record (several candidates
with their retraining packed: :func:`run_packed_trials`)."""

from __future__ import annotations

import copy
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import PartialState
from transformers import PreTrainedModel

from hfprune.study.oracle.recipe import RetrainSection
from hfprune.io import quiet_hf_progress, save_atomically
from hfprune.pruning.connectivity import analyse, is_supported
from hfprune.pruning.masking import MaskedParameters, pruned_l1
from hfprune.pruning.structured.importance import MASK_CRITERIA
from hfprune.seeding import stable_seed
from hfprune.study.oracle.physical import Shrink, physical_facts
from hfprune.study.oracle.plan import TrialSpec
from hfprune.study.oracle.iterative import record_last_round
from hfprune.records.record import TrialRecord, add_connectivity
from hfprune.study.tasks import Task
from hfprune.train.lora import train_lora
from hfprune.train.packed import PackedJob, train_packed
from hfprune.train.trainer import TrainResult, train

TRIAL_FILE = "trial.json"
MasksFor = Callable[[TrialSpec, torch.nn.Module], tuple[dict[str, torch.Tensor], dict[str, Any]]]

RETRAINED = "retrained"  # in a trial's workdir: the retrained model and its record, until the trial is recorded


def run_trial(
    spec: TrialSpec,
    dense: PreTrainedModel,
    masks_for: MasksFor,
    task: Task,
    retrain: RetrainSection,
    study_seed: int,
    progress: bool = True,
    workdir: Path | None = None,
    shrink: Shrink | None = None,
    rounds: Callable | None = None,
    final_train: bool = False,
) -> tuple[TrialRecord, PreTrainedModel]:
    """Prune a copy of ``dense``, measure it, retrain it (masks exact) and evaluate it.

    ``masks_for`` gives the trial's parameter masks and the facts the record keeps about them;
    ``workdir`` keeps what the final evaluation writes (e.g. generated answers) and, for tasks whose
    retraining is expensive (``task.keeps_retrained``), the retrained model: a trial killed during its final
    evaluation resumes there. ``rounds`` (a plan's ``run_rounds``) prunes and retrains the earlier rounds of an
    iterative schedule first; ``shrink`` (see :mod:`hfprune.study.oracle.physical`) then makes the pruned model the
    physically pruned one before retraining. Returns the trial record and the retrained model (physically
    pruned after ``shrink``, else still masked).
    """
    checkpoint = workdir / RETRAINED if workdir is not None and task.keeps_retrained else None
    resumed = _load_retrained(checkpoint, dense) if checkpoint is not None else None
    if resumed is not None:
        record, model = resumed
    else:
        pruned = prune_trial(spec, dense, masks_for, task, study_seed, progress, shrink, rounds)
        retrain_trial(pruned, task, retrain, progress)
        record, model = pruned.record, pruned.model
        if checkpoint is not None:
            _save_retrained(model, record, checkpoint)
    finish_trial(record, model, task, workdir, final_train)
    return record, model


def run_packed_trials(specs: list[TrialSpec], dense: PreTrainedModel, masks_for: MasksFor, task: Task,
                      retrains: list[RetrainSection], study_seed: int, workdirs: list[Path | None],
                      shrinks: list[Shrink | None],
                      final_train: bool = False) -> list[tuple[TrialRecord, PreTrainedModel]]:
    """Several trials as :func:`run_trial` runs each, their retraining as one pack (:mod:`hfprune.train.packed`):
    each is pruned and measured alone, the pruned models retrain as one stacked model, each is evaluated alone. A
    record equals the trial's alone within :data:`hfprune.train.packed.TOLERANCE` of the weights (masks, nonzeros
    and every fact identical). The task splits its loss for packing (``pack_loss``); the caller gives trials of one
    pack key (:meth:`hfprune.study.oracle.context.OracleContext.pack_key`: one shape after pruning, shared settings,
    only retraining the packed engine does), or the engine refuses the pack in one line."""
    pruned = [prune_trial(spec, dense, masks_for, task, study_seed, False, shrink)
              for spec, shrink in zip(specs, shrinks)]
    started = time.perf_counter()
    loss_fn, transform = task.pack_loss(retrains[0])
    jobs = [PackedJob(trial.model, retrain, trial.seed, trial.masked) for trial, retrain in zip(pruned, retrains)]
    results = train_packed(jobs, task.train_set, loss_fn, batch_transform=transform, progress=False,
                           description=f"retrain pack of {len(jobs)}")
    share = (time.perf_counter() - started) / len(pruned)
    for trial, result in zip(pruned, results):
        _retrained(trial, result, share)
    for trial, workdir in zip(pruned, workdirs):
        finish_trial(trial.record, trial.model, task, workdir, final_train)
    return [(trial.record, trial.model) for trial in pruned]


def finish_trial(record: TrialRecord, model: PreTrainedModel, task: Task, workdir: Path | None,
                 final_train: bool) -> None:
    """The retrained model's final metrics (test; train where asked) and nonzero weights, into ``record``."""
    started = time.perf_counter()
    record.add_all("final_test", task.evaluate(model, "test", workdir), task.direction)
    if final_train:
        record.add_all("final_train", task.evaluate(model, "train"), task.direction)
    record.facts["measured"] = ["final_test"] + (["final_train"] if final_train else [])
    if is_supported(model):  # MLP and ConvNet families: the nominal and effective nonzero weights
        example = task.example_input() if hasattr(task, "example_input") else None
        add_connectivity(record, analyse(model, example_input=example))
    record.timings["final_eval_s"] = time.perf_counter() - started


def measures_final_train(recipe, task: Task) -> bool:
    """Whether trials evaluate the whole train split after retraining: ``evaluation.final_train``, by default only
    where the task ranks trials by it (a vision-language study without a test split)."""
    asked = recipe.evaluation.final_train
    return getattr(task, "final_train_by_default", False) if asked is None else asked


@dataclass
class PrunedTrial:
    """A trial between pruning and retraining: its record so far, the model it retrains (masked, or physically
    pruned: then ``masked`` is None), and its seed."""

    record: TrialRecord
    model: PreTrainedModel
    masked: MaskedParameters | None
    seed: int


def prune_trial(spec: TrialSpec, dense: PreTrainedModel, masks_for: MasksFor, task: Task, study_seed: int,
                progress: bool, shrink: Shrink | None = None, rounds: Callable | None = None) -> PrunedTrial:
    """Prune a copy of ``dense`` as ``spec`` says (after ``rounds``' earlier rounds), measure it, and shrink it
    where ``shrink`` is given."""
    seed = stable_seed(study_seed, spec.trial_id)
    model = copy.deepcopy(dense).to(PartialState().device)  # pruned on the device it is measured on
    started = time.perf_counter()
    masks, mask_facts = masks_for(spec, model)  # on the unpruned copy: criteria score the dense units
    criteria = mask_facts.pop(MASK_CRITERIA, {})
    record = TrialRecord(spec.trial_id, spec.candidate.setting, spec.candidate.mask_id, spec.repeat, seed,
                         candidate={**spec.candidate.facts(), **mask_facts})
    if spec.variant is not None:
        record.facts.update(spec.variant.facts())
    timings = record.timings
    timings["masks_s"] = time.perf_counter() - started
    # the dense weights the masks remove (a method may have updated the model's kept weights, e.g. SparseGPT)
    record.add("pruned_l1", pruned_l1(dense, masks), higher_is_better=False)  # removing less weight is better
    for name, value in criteria.items():  # e.g. pruned_taylor_fo: removing less important units is better
        record.add(name, value, higher_is_better=False)
    schedule = rounds(spec, model, record, seed, progress) if rounds is not None else None  # iterative: rounds 1..R-1
    masked = MaskedParameters(model, masks)
    masked.apply()

    started = time.perf_counter()
    for split in task.pruned_splits:
        record.add_all(f"pruned_{split}", task.evaluate(model, split), task.direction)
    timings["pruned_eval_s"] = time.perf_counter() - started
    if schedule is not None:
        record_last_round(record, schedule)
    if shrink is not None:  # the same network, retrained without masks at fewer FLOPs
        model, masked = shrink(model), None
    record.facts.update(physical_facts(model, shrink is not None))
    return PrunedTrial(record, model, masked, seed)


def retrain_trial(trial: PrunedTrial, task: Task, retrain: RetrainSection, progress: bool) -> None:
    """Retrain ``trial``'s model in place (masks exact; a short retrain of a copy first where asked)."""
    record, model, masked, seed = trial.record, trial.model, trial.masked, trial.seed
    loss_fn = task.loss_fn(retrain)
    fit = train if retrain.lora is None else functools.partial(train_lora, lora=retrain.lora)  # LoRA, merged after
    if retrain.short_fraction:
        started = time.perf_counter()
        short_model = copy.deepcopy(model)
        fit(short_model, task.train_set, retrain.scaled(retrain.short_fraction), loss_fn, seed=seed,
            masks=None if masked is None else MaskedParameters(short_model, dict(zip(masked.names, masked.masks))),
            progress=progress, description="short retrain", find_unused_parameters=task.find_unused_parameters)
        record.add_all("short_test", task.evaluate(short_model, "test"), task.direction)
        record.timings["short_retrain_s"] = time.perf_counter() - started
        del short_model

    started = time.perf_counter()
    result = fit(model, task.train_set, retrain, loss_fn, seed=seed, masks=masked, progress=progress,
                 description="retrain", find_unused_parameters=task.find_unused_parameters)
    _retrained(trial, result, time.perf_counter() - started)


def _retrained(trial: PrunedTrial, result: TrainResult, seconds: float) -> None:
    trial.record.timings["retrain_s"] = seconds
    trial.record.facts.update(retrain_steps=result.steps,
                              mask_violations=trial.masked.violations() if trial.masked is not None else 0)


def _save_retrained(model: PreTrainedModel, record: TrialRecord, checkpoint: Path) -> None:
    """The retrained model with its record so far (the main process writes; the others wait for it)."""
    state = PartialState()
    if state.is_main_process:
        save_atomically(model, checkpoint, extras=[
            lambda folder: (folder / TRIAL_FILE).write_text(json.dumps(record.to_json()))])
    state.wait_for_everyone()


def _load_retrained(checkpoint: Path, dense: PreTrainedModel) -> tuple[TrialRecord, PreTrainedModel] | None:
    """(record so far, retrained model) saved by an earlier, interrupted run of this trial; None if there is none."""
    if not (checkpoint / TRIAL_FILE).is_file():
        return None
    try:
        with quiet_hf_progress():
            model = type(dense).from_pretrained(checkpoint, dtype=dense.dtype)
        record = TrialRecord.from_json(json.loads((checkpoint / TRIAL_FILE).read_text()))
    except Exception:  # noqa: BLE001 - an unreadable cache of an unfinished trial: retrain it
        return None
    return record, model.to(PartialState().device)
