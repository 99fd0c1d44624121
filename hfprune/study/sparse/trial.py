"""One trial of a sparse study: initialise, make sparse and train, evaluate, and measure connectivity."""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedModel

from hfprune.errors import HfpruneError
from hfprune.evaluation.binary import binary_loss, evaluate_binary
from hfprune.pruning.connectivity import analyse
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.pruning.sparse_training.loop import train_masked
from hfprune.seeding import stable_seed
from hfprune.study.plan import TrialSpec
from hfprune.study.record import TrialRecord, add_connectivity
from hfprune.study.sparse.candidates import DenseTrial, MethodTrial, SearchTrial
from hfprune.train.trainer import train


def initial_model(adapter, config, study_seed: int, repeat: int) -> PreTrainedModel:
    """The initialisation every trial of one repeat starts from (search candidates and methods alike)."""
    torch.manual_seed(stable_seed(study_seed, "init", repeat))
    return adapter.build(config)


def run_sparse_trial(spec: TrialSpec, adapter, config, data, training, study_seed: int, evaluation_batch: int,
                     progress: bool = False) -> tuple[TrialRecord, PreTrainedModel]:
    """Train one candidate from the repeat's initialisation and return its record and the trained model."""
    candidate = spec.candidate
    seed = stable_seed(study_seed, spec.trial_id)
    model = initial_model(adapter, config, study_seed, spec.repeat)
    run = SparseRun(model, adapter.prunable_weights(model), data.train, training, binary_loss, seed, progress)
    record = TrialRecord(spec.trial_id, candidate.setting, candidate.mask_id, spec.repeat, seed,
                         candidate=candidate.facts())
    started = time.perf_counter()
    if isinstance(candidate, SearchTrial):
        masks = candidate.search.masks(model)
        train_masked(run, masks, description=f"search {candidate.mask_id}")
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
        train(model, data.train, training, binary_loss, seed=seed, progress=progress, description="dense")
        epochs = training.epochs
    else:
        raise TypeError(f"not a sparse-study candidate: {candidate!r}")
    record.timings["train_s"] = time.perf_counter() - started
    record.facts["epochs"] = epochs

    started = time.perf_counter()
    metrics = evaluate_binary(model, data.test, batch_size=evaluation_batch)
    record.add("final_test_acc", metrics["acc"], higher_is_better=True)
    record.add("final_test_loss", metrics["loss"], higher_is_better=False)
    add_connectivity(record, analyse(model))
    record.timings["eval_s"] = time.perf_counter() - started
    return record, model
