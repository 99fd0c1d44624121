"""Selection by any criterion on the same candidates: regret, rank and retraining cost of each choice.

For a study whose candidates were all fully retrained, each criterion picks the candidate it rates best; its
*regret* is the best final result among all candidates minus the chosen one's (docs/studies.md, "Selection
criteria and regret"). Ties in a criterion are shared out: the choice counts as a uniform draw among the tied
candidates (expected regret and rank), and *random* is the uniform draw over all candidates.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from hfprune.report.bootstrap import Bootstrap, statistic_interval
from hfprune.report.stats import infer_higher_is_better
from hfprune.report.tables import column_values, numeric_columns, pair_points

# (criterion column, label, how its epochs are spent before the chosen candidate is fully retrained)
CRITERIA = (
    ("pruned_train_loss", "oracle (lowest pruned train loss)", "none"),
    ("pruned_l1", "L1 of the pruned weights", "none"),
    ("pruned_taylor_fo", "Taylor-FO of the pruned weights", "none"),
    ("short_test_acc", "short-retrain accuracy", "short"),
)
RANDOM = "random"


def _goodness(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    return values if higher_is_better else -values


def choice(criterion: np.ndarray, outcome: np.ndarray, criterion_higher: bool, outcome_higher: bool) -> dict:
    """Expected regret and top share of picking the best ``criterion`` (a uniform draw among its ties).

    ``top`` is the share of candidates at least as good as the chosen one ((1 + strictly better) / n): the
    best candidate has 1/n, a top-10% candidate at most 0.1.
    """
    gc, gy = _goodness(criterion, criterion_higher), _goodness(outcome, outcome_higher)
    chosen = np.flatnonzero(gc == gc.max()) if len(gc) else np.array([], dtype=int)
    return _draw(gy, chosen)


def _draw(gy: np.ndarray, chosen: np.ndarray) -> dict:
    """Regret and top share of a uniform draw among ``chosen`` indices of oriented outcomes ``gy``."""
    if len(chosen) == 0:
        return {"regret": math.nan, "top": math.nan}
    best = gy.max()
    better = len(gy) - np.searchsorted(np.sort(gy), gy[chosen], side="right")  # strictly better, O(n log n)
    return {"regret": float(np.mean(best - gy[chosen])), "top": float(np.mean((1 + better) / len(gy)))}


def _cost(kind: str, n: int, full: int | None, short: int | None) -> float | None:
    """Retraining epochs a selection spends: its own (short retrains of every candidate) plus the chosen one's
    full retraining."""
    if full is None:
        return None
    if kind == "short":
        return None if short is None else float(n * short + full)
    return float(full)


def regret_table(rows: list[dict[str, Any]], directions: Mapping[str, bool], source: str, outcome: str,
                 full_epochs: int | None = None, short_epochs: int | None = None,
                 bootstrap: Bootstrap | None = Bootstrap()) -> list[dict[str, Any]]:
    """One row per (setting, criterion with values, plus random): regret, top share, epochs, the regret's
    bootstrap interval, and the exhaustive study's epochs (every candidate fully retrained) to compare."""
    if outcome not in numeric_columns(rows) or not np.isfinite(column_values(rows, outcome, source)).any():
        return []
    higher = lambda column: directions[column] if column in directions else infer_higher_is_better(column)  # noqa: E731
    outcome_higher = higher(outcome)
    table = []
    present = [c for c in CRITERIA if c[0] in numeric_columns(rows)
               and np.isfinite(column_values(rows, c[0], source)).any()]
    for column, label, kind in present + [(RANDOM, "random", "none")]:
        x = column if column != RANDOM else outcome
        for setting, points in pair_points(rows, x, outcome, source).items():
            n = len(points.y)
            if n < 2:  # nothing to choose between (e.g. the one recorded choice of successive halving)
                continue
            gy = _goodness(points.y, outcome_higher)
            if column == RANDOM:
                pick = lambda index: _draw(gy[index], np.arange(len(index)))  # noqa: E731
            else:
                gc = _goodness(points.x, higher(column))
                pick = lambda index: _draw(gy[index], np.flatnonzero(gc[index] == gc[index].max()))  # noqa: E731
            result = pick(np.arange(n))
            table.append({
                "setting": setting, "criterion": column, "label": label, "n": n, "outcome": outcome,
                "regret": result["regret"], "top": result["top"],
                "epochs": _cost(kind, n, full_epochs, short_epochs),
                "exhaustive_epochs": None if full_epochs is None else float(n * full_epochs),
                "regret_ci": None if bootstrap is None else statistic_interval(
                    lambda index: pick(index)["regret"], n, bootstrap),
            })
    return sorted(table, key=lambda row: row["setting"])  # stable: criteria keep their order within a setting


def halving_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting chosen by successive halving: the choice, its rungs, its metrics and its cost."""
    rows = []
    for record in records:
        selection = record.get("selection")
        if not isinstance(selection, dict):
            continue
        metric = selection.get("metric")
        rows.append({"setting": record.get("setting"), "mask_id": record.get("mask_id"),
                     "candidates": selection.get("candidates"),
                     "rungs": [(r.get("budget"), r.get("size")) for r in selection.get("rungs", [])],
                     "metric": metric, "validation": record.get(metric),
                     "final_test_acc": record.get("final_test_acc"),
                     "epochs_spent": selection.get("epochs_spent"),
                     "exhaustive_epochs": selection.get("exhaustive_epochs")})
    return sorted(rows, key=lambda row: str(row["setting"]))
