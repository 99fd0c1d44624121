"""What every trial of an oracle study shares, and how it runs one, or several with their retraining packed (the
oracle study's trial runner)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from transformers import PreTrainedModel

from hfprune.study.directory import trial_directory
from hfprune.study.executors import FinishedTrial
from hfprune.study.oracle.physical import retraining_shrink
from hfprune.study.oracle.plan import Plan
from hfprune.study.oracle.recipe import OracleRecipe, RetrainSection
from hfprune.study.oracle.trial import measures_final_train, run_packed_trials, run_trial
from hfprune.study.spec import TrialSpec
from hfprune.study.tasks import Task
from hfprune.train.packed import calibrate_pack_size, pack_key
from hfprune.train.packed.jobs import unsupported


@dataclass
class OracleContext:
    """Everything a trial needs besides its spec: built once per study, shared by all its trials (on Ray: put
    in the object store once, fetched once per worker process)."""

    recipe: OracleRecipe
    dense: PreTrainedModel
    task: Task
    plan: Plan
    directory: Path
    progress: bool = False  # per-epoch bars inside the trial

    def retrain(self, spec: TrialSpec) -> RetrainSection:
        """The retraining ``spec`` runs: the recipe's, with its sweep point where the sweep varies training."""
        recipe = self.recipe
        if spec.variant is not None and recipe.sweep is not None and recipe.sweep.applies_to == "training":
            return spec.variant.apply(recipe.retrain)
        return recipe.retrain

    def run(self, spec: TrialSpec, progress: bool | None = None) -> FinishedTrial:
        """Run one trial (see :func:`hfprune.study.oracle.trial.run_trial`) and make the model its export saves."""
        retrain = self.retrain(spec)
        record, model = run_trial(spec, self.dense, self.plan.masks, self.task, retrain,
                                  self.recipe.seed, self.progress if progress is None else progress,
                                  workdir=trial_directory(self.directory, spec.trial_id),
                                  shrink=retraining_shrink(self.plan, spec, retrain),
                                  rounds=getattr(self.plan, "run_rounds", None),
                                  final_train=measures_final_train(self.recipe, self.task))
        return self._finished(spec, record, model)

    def _finished(self, spec: TrialSpec, record, model: PreTrainedModel) -> FinishedTrial:
        exports = self.recipe.export.checkpoints != "none" and PartialState().is_main_process
        return FinishedTrial(spec, record, self.plan.exported(spec, model) if exports else None)

    def pack_key(self, spec: TrialSpec) -> str | None:
        """Trials whose retraining may train as one pack share a key: the same model shape after pruning (masked
        retraining: the dense shape; physical: one setting) and the same retraining settings but lr and schedule.
        None (alone) where the packed engine does not do what the trial asks: LoRA, a short retrain, iterative
        rounds, retrained models kept across a kill, mixed precision or accumulation, several processes."""
        retrain, task = self.retrain(spec), self.task
        if (not hasattr(task, "pack_loss") or task.keeps_retrained or retrain.lora is not None
                or retrain.short_fraction or getattr(self.plan, "iterative", lambda _: False)(spec)
                or unsupported(retrain) or PartialState().num_processes > 1):
            return None
        shrunk = retraining_shrink(self.plan, spec, retrain) is not None
        return f"{spec.candidate.setting if shrunk else ''}|{pack_key(self.dense, retrain)}"

    def run_pack(self, specs: list[TrialSpec], progress: bool | None = None) -> list[FinishedTrial]:
        """Several trials of one :meth:`pack_key`, each pruned and evaluated alone, retrained as one pack (see
        :func:`hfprune.study.oracle.trial.run_packed_trials`)."""
        retrains = [self.retrain(spec) for spec in specs]
        outcomes = run_packed_trials(specs, self.dense, self.plan.masks, self.task, retrains, self.recipe.seed,
                                     [trial_directory(self.directory, spec.trial_id) for spec in specs],
                                     [retraining_shrink(self.plan, spec, r) for spec, r in zip(specs, retrains)],
                                     measures_final_train(self.recipe, self.task))
        return [self._finished(spec, record, model) for spec, (record, model) in zip(specs, outcomes)]

    def calibrate(self, spec: TrialSpec) -> int:
        """The pack size that retrains the most of these trials per second here (a few steps of the dense model's
        copies at 1, 8, 32, 128)."""
        retrain = self.retrain(spec)
        loss, _ = self.task.pack_loss(retrain)
        calibration = calibrate_pack_size(self.dense, self.task.train_set, retrain, loss, sizes=(1, 8, 32, 128))
        print(calibration.describe(), file=sys.stderr)
        return calibration.best
