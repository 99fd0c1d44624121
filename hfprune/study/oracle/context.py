"""What every trial of an oracle study shares, and how it runs one (the oracle study's trial runner)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from transformers import PreTrainedModel

from hfprune.study.directory import trial_directory
from hfprune.study.executors import FinishedTrial
from hfprune.study.oracle.physical import retraining_shrink
from hfprune.study.oracle.plan import Plan
from hfprune.study.oracle.recipe import OracleRecipe
from hfprune.study.oracle.trial import measures_final_train, run_trial
from hfprune.study.spec import TrialSpec
from hfprune.study.tasks import Task


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

    def run(self, spec: TrialSpec, progress: bool | None = None) -> FinishedTrial:
        """Run one trial (see :func:`hfprune.study.oracle.trial.run_trial`) and make the model its export saves."""
        recipe = self.recipe
        retrain = recipe.retrain
        if spec.variant is not None and recipe.sweep is not None and recipe.sweep.applies_to == "training":
            retrain = spec.variant.apply(retrain)
        record, model = run_trial(spec, self.dense, self.plan.masks, self.task, retrain,
                                  recipe.seed, self.progress if progress is None else progress,
                                  workdir=trial_directory(self.directory, spec.trial_id),
                                  shrink=retraining_shrink(self.plan, spec, retrain),
                                  rounds=getattr(self.plan, "run_rounds", None),
                                  final_train=measures_final_train(recipe, self.task))
        exports = self.recipe.export.checkpoints != "none" and PartialState().is_main_process
        return FinishedTrial(spec, record, self.plan.exported(spec, model) if exports else None)
