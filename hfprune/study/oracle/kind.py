"""The oracle-pruning study kind: dense model → candidate masks (or unstructured methods) → one retrained trial
each (or one chosen per setting by successive halving) → the oracle report (STUDY §1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from transformers import PreTrainedModel

from hfprune.models import get_adapter
from hfprune.models.base import StructuredAdapter
from hfprune.records.record import TrialRecord
from hfprune.study.dense import dense_config, dense_model
from hfprune.study.directory import read_manifest
from hfprune.study.executors import Executor, FinishedTrial
from hfprune.study.kind import Stage, StudyKind, TrialsStage
from hfprune.study.oracle.context import OracleContext
from hfprune.study.oracle.export import export_trial
from hfprune.study.oracle.halving import successive_halving
from hfprune.study.oracle.plan import plan_for
from hfprune.study.oracle.recipe import OracleRecipe
from hfprune.study.spec import TrialSpec
from hfprune.study.tasks import Task, build_task
from hfprune.train.trainer import get_accelerator


@dataclass
class HalvingStage:
    """Successive halving over each setting's candidates: one chosen, fully retrained trial per setting."""

    context: OracleContext
    specs: list[TrialSpec]

    def run(self, executor: Executor, finished: set[str]) -> Iterator[FinishedTrial]:
        yield from successive_halving(self.context, executor, self.specs, finished)


def _evaluate_dense(task: Task, dense: PreTrainedModel, device, workdir: Path) -> dict[str, float]:
    """Train and test metrics of the dense model, measured on ``device``; the model goes back to the CPU after
    (trials copy it from there)."""
    dense.to(device)
    try:
        return {f"{split}_{key}": value for split in ("train", "test")
                for key, value in task.evaluate(dense, split, workdir).items()}
    finally:
        dense.to("cpu")


class OracleKind(StudyKind):
    """An oracle-pruning study (recipe: ``pruning`` and ``retrain`` sections, a dense model pretrained or given)."""

    name = "oracle"
    recipe_class = OracleRecipe
    sections = ("pruning", "retrain", "pretrain", "export")

    def check(self) -> None:
        recipe = self.recipe
        self.adapter = get_adapter(recipe.model.family, recipe.model.dtype)
        self.task = build_task(recipe, self.progress, recipe.pruning.calibration_samples)
        # Everything a recipe can get wrong about the model (groups, ratios) fails here, before any pretraining.
        self.config = dense_config(recipe, self.adapter, self.task)
        structured = isinstance(self.adapter, StructuredAdapter) and recipe.structure != "unstructured"
        self.groups = self.adapter.groups(self.config) if structured else {}
        self.plan = plan_for(recipe, self.adapter, self.groups, self.task)
        self.specs = self.plan.trials()

    @property
    def one_device_trials(self) -> bool:
        return self.task.one_device_trials

    @property
    def selecting(self) -> bool:
        """Whether each setting's trial is chosen by successive halving instead of every candidate being one."""
        return self.recipe.pruning.selection is not None

    def prepare(self) -> dict[str, Any]:
        accelerator = get_accelerator()
        evaluated = "dense" in read_manifest(self.directory)
        self.dense = dense_model(self.recipe, self.adapter, self.task, self.directory, self.progress, self.config)
        facts: dict[str, Any] = {"processes": accelerator.num_processes,
                                 "groups": {name: group.size for name, group in self.groups.items()}}
        if not evaluated:  # on every process: an evaluation may synchronise them
            facts["dense"] = _evaluate_dense(self.task, self.dense, accelerator.device, self.directory / "dense_eval")
        return facts

    def planned(self, records: list[dict]) -> int:
        return len({spec.candidate.setting for spec in self.specs}) if self.selecting else len(self.specs)

    def stages(self, records: Callable[[], list[dict]]) -> Iterator[Stage]:
        context = OracleContext(self.recipe, self.dense, self.task, self.plan, self.directory, self.progress)
        yield HalvingStage(context, self.specs) if self.selecting else TrialsStage(context, self.specs)

    def selection_metric(self, record: TrialRecord) -> str:
        return self.task.selection_metric(record)

    def export(self, trial: FinishedTrial) -> None:
        export_trial(trial, self.adapter, self.task, self.recipe, self.directory)

    @classmethod
    def report(cls, directory: Path, plots: bool = True, **options) -> dict[str, Any]:
        from hfprune.study.oracle.report import report_oracle_study

        return report_oracle_study(directory, plots=plots, **options)

    @classmethod
    def print_summary(cls, summary: dict[str, Any], console) -> None:
        from hfprune.study.oracle.report import print_oracle_summary

        print_oracle_summary(summary, console)
