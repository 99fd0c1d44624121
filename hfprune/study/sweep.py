"""A recipe's ``sweep`` as trials: its points (a grid or points given by hand) × runs, what each point changes in a
training section, and the report's reading of a sweep (the best run of every candidate).

Every study kind expands its candidates over :func:`variants` and :func:`runs`; a point with a label names its
trials (``setting:mask:label:rN``); a sweep of one point adds no label, so its trials keep the ids they have
without a sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any, Iterable, Mapping, TypeVar

from hfprune.study.recipe import SweepSchedule, SweepSection
from hfprune.train.sections import TrainingSection

Section = TypeVar("Section", bound=TrainingSection)


@dataclass(frozen=True, eq=False)
class Variant:
    """One point of a sweep: the training settings it changes (None: the recipe's) and its label."""

    label: str
    lr: float | None = None
    schedule: SweepSchedule | None = None
    epochs: int | None = None

    def apply(self, section: Section) -> Section:
        """``section`` with this point's lr, schedule and epochs (the schedule resolved for those epochs)."""
        epochs = section.epochs if self.epochs is None else self.epochs
        update: dict[str, Any] = {"epochs": epochs}
        if self.lr is not None:
            update["optimizer"] = section.optimizer.model_copy(update={"lr": self.lr})
        if self.schedule is not None:
            update["schedule"] = self.schedule.resolve(epochs)
        return section.model_copy(update=update)

    def facts(self) -> dict[str, Any]:
        """What a trial record keeps about its point (``sweep_*``; the label is ``sweep_point``)."""
        facts: dict[str, Any] = {"sweep_point": self.label}
        if self.lr is not None:
            facts["sweep_lr"] = self.lr
        if self.schedule is not None:
            facts["sweep_schedule"] = self.schedule.tag
        if self.epochs is not None:
            facts["sweep_epochs"] = self.epochs
        return facts


PLAIN = Variant("")  # no sweep: the recipe's own training


def _lr_tag(lr: float) -> str:
    return f"lr{lr:g}"


def variants(sweep: SweepSection | None) -> list[Variant]:
    """The sweep's points in a fixed order (lr slowest, then schedule, then epochs; or the points as given);
    labels name only the axes that vary. No sweep, or a sweep of one point: one unlabelled point."""
    if sweep is None:
        return [PLAIN]
    if sweep.points:
        if len(sweep.points) == 1 and sweep.points[0].label is None:
            point = sweep.points[0]
            return [Variant("", point.lr, point.schedule, point.epochs)]
        return [Variant(point.label, point.lr, point.schedule, point.epochs) for point in sweep.points]
    axes = [sweep.lr or [None], sweep.schedule or [None], sweep.epochs or [None]]
    found = []
    for lr, schedule, epochs in product(*axes):
        parts = [_lr_tag(lr) if len(sweep.lr) > 1 else "", schedule.tag if len(sweep.schedule) > 1 else "",
                 f"e{epochs}" if len(sweep.epochs) > 1 else ""]
        found.append(Variant("-".join(part for part in parts if part), lr, schedule, epochs))
    return found


def runs(sweep: SweepSection | None, repeats: int = 1) -> int:
    """Runs of every point: the sweep's, else the kind's own repeats."""
    return repeats if sweep is None else sweep.runs


def check_runs(sweep: SweepSection | None, repeats: int, field: str) -> None:
    """A recipe gives runs in one place: ``sweep.runs`` or the kind's repeats (``field``)."""
    if sweep is not None and repeats != 1:
        raise ValueError(f"{field} and sweep.runs both repeat trials; with a sweep give sweep.runs only")


def candidate_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """The candidate a record trained, whatever its sweep point and run: (setting, mask id)."""
    return str(record.get("setting")), str(record.get("mask_id"))


def best_per_candidate(records: Iterable[Mapping[str, Any]], metric: str = "final_test_acc",
                       higher_is_better: bool = True) -> list[dict[str, Any]]:
    """Per candidate (setting, mask id): its runs over every sweep point, the best value of ``metric`` and the
    trial that reached it (ties: the first trial id in sorted order), and the mean. Records without the metric
    are left out. Sorted by setting, then mask id."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        if record.get(metric) is not None:
            grouped.setdefault(candidate_key(record), []).append(record)
    rows = []
    for (setting, mask_id), group in sorted(grouped.items()):
        group = sorted(group, key=lambda r: str(r.get("trial_id")))
        values = [float(r[metric]) for r in group]
        best = max(values) if higher_is_better else min(values)
        winner = group[values.index(best)]
        rows.append({"setting": setting, "mask_id": mask_id, "runs": len(group), "best": best,
                     "mean": sum(values) / len(values), "best_trial": winner.get("trial_id"),
                     "best_point": winner.get("sweep_point", ""), "best_run": winner.get("repeat")})
    return rows


def best_records(records: Iterable[Mapping[str, Any]], metric: str = "final_test_acc",
                 higher_is_better: bool = True) -> list[Mapping[str, Any]]:
    """One record per candidate: the one :func:`best_per_candidate` names (the paper's point of a candidate)."""
    by_id = {record.get("trial_id"): record for record in records}
    return [by_id[row["best_trial"]] for row in best_per_candidate(by_id.values(), metric, higher_is_better)]
