"""One trial of a sparse study: initialise, make sparse and train, evaluate, and count what stayed connected.

A trial is a generator of training phases (:mod:`hfprune.pruning.sparse_training.phases`), so that it trains alone
(:func:`run_sparse_trial`) or packed with trials of the same shape; either way its record is the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generator

import torch
from transformers import PretrainedConfig, PreTrainedModel

from hfprune.errors import HfpruneError
from hfprune.models.base import ModelAdapter
from hfprune.pruning.connectivity import analyse
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.pruning.sparse_training.phases import TrainPhase, run_phases
from hfprune.records.record import TrialRecord, add_connectivity
from hfprune.seeding import stable_seed
from hfprune.study.spec import TrialSpec
from hfprune.study.sparse.candidates import DenseTrial, MaskTrial, MethodTrial
from hfprune.study.sparse.recipe import SparseRecipe
from hfprune.study.tasks import Task
from hfprune.train.sections import TrainingSection
from hfprune.train.trainer import TrainResult

TrialPhases = Generator[TrainPhase, TrainResult, tuple[TrialRecord, PreTrainedModel]]


def init_seed(study_seed: int, spec: TrialSpec, mode: str) -> int:
    """The seed of a trial's initialisation: ``per_run`` (run r of every candidate shares one), ``fixed`` (one for
    the study) or ``fresh`` (one per trial)."""
    if mode == "fresh":
        return stable_seed(study_seed, "init", spec.trial_id)
    return stable_seed(study_seed, "init", 0 if mode == "fixed" else spec.repeat)


def _slice_of(model: PreTrainedModel, wide: PreTrainedModel) -> None:
    """Copy into ``model`` the top-left block of each of ``wide``'s parameters (same names, larger shapes)."""
    source = dict(wide.named_parameters())
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(source[name][tuple(slice(0, size) for size in param.shape)])


def initial_model(adapter: ModelAdapter, config: PretrainedConfig, study_seed: int, repeat: int,
                  seed: int | None = None, init_width: int | None = None) -> PreTrainedModel:
    """The model a trial starts from: built from ``seed`` (default: repeat ``repeat``'s initialisation, the one
    every trial of the repeat shares); with ``init_width``, the top-left slice of the initialisation of an MLP of
    that width (the paper's optimal-initialisation runs)."""
    torch.manual_seed(stable_seed(study_seed, "init", repeat) if seed is None else seed)
    if init_width is None:
        return adapter.build(config)
    hidden = list(config.hidden_sizes)
    wide = adapter.build(config.__class__(**{**config.to_dict(), "hidden_sizes": [init_width] * len(hidden)}))
    model = adapter.build(config) if hidden != [init_width] * len(hidden) else wide
    if model is not wide:
        _slice_of(model, wide)
    return model


@dataclass
class TrialSetup:
    """What a trial needs besides its spec (one per study)."""

    recipe: SparseRecipe
    adapter: ModelAdapter
    config: PretrainedConfig
    task: Task
    progress: bool = False

    def section(self, spec: TrialSpec) -> TrainingSection:
        """The trial's training: the recipe's, with its sweep point's settings."""
        training = self.recipe.training
        return training if spec.variant is None else spec.variant.apply(training)

    def init_mode(self) -> str:
        return "per_run" if self.recipe.sweep is None else self.recipe.sweep.init


def trial_phases(spec: TrialSpec, setup: TrialSetup) -> TrialPhases:
    """Train one candidate from its initialisation (phase by phase), then evaluate it; return its record and the
    trained model."""
    recipe, adapter, task = setup.recipe, setup.adapter, setup.task
    candidate, section = spec.candidate, setup.section(spec)
    seed = stable_seed(recipe.seed, spec.trial_id)
    mode = setup.init_mode()
    model = initial_model(adapter, setup.config, recipe.seed, spec.repeat, init_seed(recipe.seed, spec, mode),
                          recipe.sparse.init_width)
    loss_fn = task.loss_fn(section)
    run = SparseRun(model, adapter.prunable_weights(model), task.train_set, section, loss_fn, seed, setup.progress,
                    drop_last=recipe.sparse.drop_last)
    record = TrialRecord(spec.trial_id, candidate.setting, candidate.mask_id, spec.repeat, seed,
                         candidate=candidate.facts())
    record.facts.update(spec.variant.facts() if spec.variant is not None else {})
    record.facts.update(init=mode, **({"init_width": recipe.sparse.init_width} if recipe.sparse.init_width else {}))
    trained = 0.0
    if isinstance(candidate, MaskTrial):  # a search candidate or a structured mask, trained under its fixed mask
        result = yield run.phase(MaskedParameters(model, candidate.masks(model)),
                                 description=f"{candidate.setting} {candidate.mask_id}")
        trained, epochs = result.seconds, section.epochs
    elif isinstance(candidate, MethodTrial):
        target = candidate.target(recipe.sparse.final_count)
        phases = candidate.method.phases(run, target)
        try:  # the method's phases, each trained by whoever trains this trial's
            phase = next(phases)
            while True:
                result = yield phase
                trained += result.seconds
                phase = phases.send(result)
        except StopIteration as stop:
            outcome = stop.value
        if outcome.nonzeros != target:
            raise HfpruneError(f"method {candidate.method.label} ended with {outcome.nonzeros} nonzero weights, not "
                               f"its target {target} (budget {candidate.budget}, sparse.final_count "
                               f"{recipe.sparse.final_count})")
        epochs = outcome.epochs
        record.facts.update(outcome.facts, target_nonzeros=target)
        record.timings.update(outcome.timings)
    elif isinstance(candidate, DenseTrial):
        result = yield run.phase(None, description="dense")
        trained, epochs = result.seconds, section.epochs
    else:
        raise TypeError(f"not a sparse-study candidate: {candidate!r}")
    record.timings["train_s"] = trained  # in a pack: its share of the pack's time
    record.facts["epochs"] = epochs

    started = time.perf_counter()
    record.add_all("final_test", task.evaluate(model, "test"), task.direction)
    if adapter.connectivity:
        connectivity = analyse(model, example_input=_example(task))
        add_connectivity(record, connectivity)
        if connectivity.live_biases is not None:  # the reference's Model NNZ: weights + live biases
            record.add("live_biases", connectivity.live_biases, higher_is_better=None)
            record.add("model_nonzeros", connectivity.model_nonzeros, higher_is_better=None)
    else:
        nonzeros = sum(int(weight.count_nonzero()) for weight in run.weights.values())
        record.add("nonzeros", nonzeros, higher_is_better=None)
    record.timings["eval_s"] = time.perf_counter() - started
    return record, model


def run_sparse_trial(spec: TrialSpec, setup: TrialSetup) -> tuple[TrialRecord, PreTrainedModel]:
    """One trial alone."""
    return run_phases(trial_phases(spec, setup))


def _example(task: Task) -> torch.Tensor | None:
    return task.example_input() if hasattr(task, "example_input") else None
