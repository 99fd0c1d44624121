"""What a study kind is to the engine: a registered class that owns its recipe, its stages and its report.

The engine (:mod:`hfprune.study.runner`) claims the study directory, starts the executor, records every trial
a stage yields and shows progress; it knows no kind. A kind says what runs: :meth:`StudyKind.check` (all a
recipe can get wrong, before anything is written), :meth:`StudyKind.prepare` (what every trial shares, e.g. the
dense model), :meth:`StudyKind.stages` (the trials, in stages that may depend on earlier records),
:meth:`StudyKind.export` (what a finished trial saves besides its record) and :meth:`StudyKind.report` (its
report section).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Protocol

from hfprune.records.record import TrialRecord
from hfprune.study.cost import Cost, guard
from hfprune.study.executors import Executor, FinishedTrial, TrialRunner
from hfprune.study.spec import TrialSpec
from hfprune.study.recipe import StudyRecipe


class Stage(Protocol):
    """A part of a study that runs trials on an executor and yields each as it finishes."""

    def run(self, executor: Executor, finished: set[str]) -> Iterator[FinishedTrial]:
        """Run the stage's trials that are not in ``finished`` (recorded ids); yield each finished trial."""


@dataclass
class TrialsStage:
    """The usual stage: these trials (a list, or a lazy iterable of a large space), each run once by the executor
    with ``runner``."""

    runner: TrialRunner
    specs: Iterable[TrialSpec]

    def run(self, executor: Executor, finished: set[str]) -> Iterator[FinishedTrial]:
        yield from executor.run(self.runner, (spec for spec in self.specs if spec.trial_id not in finished))


class StudyKind(ABC):
    """A registered study kind (see :mod:`hfprune.study.registry`)."""

    name: ClassVar[str]  # the recipe's ``kind`` and the manifest's
    recipe_class: ClassVar[type[StudyRecipe]]
    sections: ClassVar[tuple[str, ...]]  # top-level recipe sections only this kind has (a document's kind)
    shown: ClassVar[str] = "pruned_train_loss"  # the metric progress lines show for every trial

    def __init__(self, recipe: StudyRecipe, directory: Path, progress: bool = False, go_on: bool = False):
        self.recipe, self.directory, self.progress, self.go_on = recipe, Path(directory), progress, go_on

    def guard(self, cost: Cost, what: str | None = None) -> None:
        """Print what ``cost`` counts and refuse, before any work, a study beyond ``execution.max_trials`` (default
        :data:`hfprune.study.cost.DEFAULT_MAX_TRIALS`) unless the run says to go on (``hfprune run --yes``)."""
        guard(cost, what or self.recipe.name, self.recipe.execution.max_trials, self.go_on)

    @property
    def one_device_trials(self) -> bool:
        """Whether a trial fits one process on one device (so Ray may run several at once)."""
        return True

    @abstractmethod
    def check(self) -> None:
        """Everything the recipe can get wrong about its model, data and plan: raise before anything is written."""

    def prepare(self) -> dict[str, Any]:
        """What every trial shares, made (or read back) once per run on every process; returns facts for the
        manifest (written by the main process)."""
        return {}

    @abstractmethod
    def planned(self, records: list[dict]) -> int:
        """Trials the study records in all, as far as ``records`` (those recorded so far) tell."""

    @abstractmethod
    def stages(self, records: Callable[[], list[dict]]) -> Iterator[Stage]:
        """The study's stages in order; ``records()`` reads what is recorded so far (a later stage may be planned
        from an earlier one's records)."""

    def selection_metric(self, record: TrialRecord) -> str:
        """The record metric that ranks finished trials (progress' running best, the best checkpoint)."""
        return "final_test_acc"

    def export(self, trial: FinishedTrial) -> None:
        """Save what a finished trial leaves besides its record (before the record: a kill in between reruns
        the trial, which saves the same again)."""

    @classmethod
    @abstractmethod
    def report(cls, directory: Path, plots: bool = True, **options) -> dict[str, Any]:
        """Write the study's report files into ``directory``; return the report as JSON data (``options``: the
        kind's own, e.g. the oracle report's ``directions``)."""

    @classmethod
    @abstractmethod
    def print_summary(cls, summary: dict[str, Any], console) -> None:
        """Print a short view of :meth:`report`'s result."""
