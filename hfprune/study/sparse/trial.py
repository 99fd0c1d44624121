"""One trial of a sparse study: initialise, make sparse and train, evaluate, and count what stayed connected."""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedModel

from hfprune.errors import HfpruneError
from hfprune.models.base import ModelAdapter
from hfprune.pruning.connectivity import analyse
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.pruning.sparse_training.loop import train_masked
from hfprune.records.record import TrialRecord, add_connectivity
from hfprune.seeding import stable_seed
from hfprune.study.spec import TrialSpec
from hfprune.study.sparse.candidates import DenseTrial, MaskTrial, MethodTrial
from hfprune.study.tasks import Task
from hfprune.train.sections import TrainingSection
from hfprune.train.trainer import train


def initial_model(adapter: ModelAdapter, config, study_seed: int, repeat: int) -> PreTrainedModel:
    """The initialisation every trial of one repeat starts from (search candidates and methods alike)."""
    torch.manual_seed(stable_seed(study_seed, "init", repeat))
    return adapter.build(config)


def run_sparse_trial(spec: TrialSpec, adapter: ModelAdapter, config, task: Task, training: TrainingSection,
                     study_seed: int, progress: bool = False) -> tuple[TrialRecord, PreTrainedModel]:
    """Train one candidate from the repeat's initialisation and return its record and the trained model."""
    candidate = spec.candidate
    seed = stable_seed(study_seed, spec.trial_id)
    model = initial_model(adapter, config, study_seed, spec.repeat)
    loss_fn = task.loss_fn(training)
    run = SparseRun(model, adapter.prunable_weights(model), task.train_set, training, loss_fn, seed, progress)
    record = TrialRecord(spec.trial_id, candidate.setting, candidate.mask_id, spec.repeat, seed,
                         candidate=candidate.facts())
    started = time.perf_counter()
    if isinstance(candidate, MaskTrial):  # a search candidate or a structured mask, trained under its fixed mask
        train_masked(run, candidate.masks(model), description=f"{candidate.setting} {candidate.mask_id}")
        epochs = training.epochs
    elif isinstance(candidate, MethodTrial):
        result = candidate.method.run(run, candidate.budget)
        if result.nonzeros != candidate.budget:
            raise HfpruneError(f"method {candidate.method.label} ended with {result.nonzeros} nonzero weights, not "
                               f"its budget {candidate.budget}")
        epochs = result.epochs
        record.facts.update(result.facts)
        record.timings.update(result.timings)
    elif isinstance(candidate, DenseTrial):
        train(model, task.train_set, training, loss_fn, seed=seed, progress=progress, description="dense")
        epochs = training.epochs
    else:
        raise TypeError(f"not a sparse-study candidate: {candidate!r}")
    record.timings["train_s"] = time.perf_counter() - started
    record.facts["epochs"] = epochs

    started = time.perf_counter()
    record.add_all("final_test", task.evaluate(model, "test"), task.direction)
    if adapter.connectivity:
        add_connectivity(record, analyse(model, example_input=_example(task)))
    else:
        nonzeros = sum(int(weight.count_nonzero()) for weight in run.weights.values())
        record.add("nonzeros", nonzeros, higher_is_better=None)
    record.timings["eval_s"] = time.perf_counter() - started
    return record, model


def _example(task: Task) -> torch.Tensor | None:
    return task.example_input() if hasattr(task, "example_input") else None
